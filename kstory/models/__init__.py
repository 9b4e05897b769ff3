"""The story architecture (`StoryBackbone`), the task that trains and
generates with it (`StoryModel`), and building both from configs.

```python
from kstory.models import StoryModel

model = StoryModel.from_preset("path/to/preset")
```
"""

from kstory.models.builders import build_story_model
from kstory.models.model_config import ModelConfig
from kstory.models.story_backbone import StoryBackbone
from kstory.models.story_model import StoryModel

__all__ = ["ModelConfig", "StoryBackbone", "StoryModel", "build_story_model"]
