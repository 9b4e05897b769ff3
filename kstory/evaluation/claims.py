"""The README's headline claims, as thresholds on a trained run's metrics.

Each `Claim` names the README sentence it guards and turns a run's
`metrics.json` (`kstory evaluate`) into checks: a measured value, a bound and
a direction. A claim holds when every one of its checks does. The contract of
the quickstart is these claims, not exact scores: another CPU, backend or
seed gives other figures (within the seed spread of `results/tiny_seeds_*.md`),
and the claims must hold for all of them. `kstory check-claims --workdir DIR`
prints every check and exits 1 naming the claims that fail; `.ci/run` runs it
on the `make demo` run.

Example:
>>> metrics = {"retrieval": {"model": {"image_to_text_R@1": 0.2, "text_to_image_R@1": 0.01},
...     "chance": {"image_to_text_R@1": 0.004, "text_to_image_R@1": 0.004}}}
>>> [(check.label, check.passed) for check in CLAIMS_BY_NAME["retrieval"].check(metrics)]
[('image_to_text_R@1 / chance', True), ('text_to_image_R@1 / chance', False)]
"""

import dataclasses
import json
import operator
import os

from kstory.evaluation.input_reliance import relative_change
from kstory.workdir import METRICS_JSON_FILE

# The bars the README states.
MIN_RELIANCE_DROP = 0.10
MIN_RETRIEVAL_OVER_CHANCE = 10.0
MAX_IMAGE_EMBEDDING_COSINE = 0.9

CAPTION_FLOORS = ("copy last caption", "nearest training context")
IMAGE_FLOORS = ("copy last frame", "mean training image")
GROUNDING_FLOORS = ("last frame's entities", "every context entity")


_RELATIONS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_NEGATED = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


@dataclasses.dataclass(frozen=True)
class Check:
    """One measured value against its bound.

    Args:
        label: str. What is measured, e.g. `"BLEU-4: model vs copy last caption"`.
        value: float or None. The measured value; None when the metrics do
            not have it (the check then fails).
        relation: str. `">"`, `">="`, `"<"` or `"<="`: how `value` must
            stand to `bound`.
        bound: float or None.
        missing: str. Why `value` is None.
    """

    label: str
    value: float
    relation: str
    bound: float
    missing: str = ""

    @property
    def passed(self):
        if self.value is None or self.bound is None:
            return False  # Not measured: the claim is not shown to hold.
        return _RELATIONS[self.relation](self.value, self.bound)

    def describe(self):
        if not self.passed and self.missing:
            return f"{self.label}: not measured ({self.missing})"
        relation = self.relation if self.passed else _NEGATED[self.relation]
        return f"{self.label}: {self.value:.4g} {relation} {self.bound:.4g}"


def _find(metrics, path):
    """`(value, "")` at `path` in the metrics, or `(None, why)` naming the
    first missing key."""
    value = metrics
    for depth, key in enumerate(path, 1):
        if not isinstance(value, dict) or key not in value:
            return None, f"no {'.'.join(path[:depth])} in the metrics"
        value = value[key]
    return value, ""


def _beats_floors(section, scores, floors, score_path=()):
    """Checks: the model is strictly better than each floor on each
    `(score, higher_is_better)` of `metrics[section]`."""

    def measure(metrics):
        checks = []
        for score, higher_is_better in scores:
            model, missing_model = _find(metrics, (section, "model", *score_path, score))
            for floor in floors:
                value, missing_floor = _find(metrics, (section, floor, *score_path, score))
                missing = missing_model or missing_floor
                checks.append(
                    Check(
                        f"{score}: model vs {floor}",
                        None if missing else model,
                        ">" if higher_is_better else "<",
                        value,
                        missing,
                    )
                )
        return checks

    return measure


def _reliance(score, output_part, shuffled, higher_is_better):
    """Check: `score` of `output_part` is at least `MIN_RELIANCE_DROP` worse
    (relative) with the context's `shuffled` shuffled."""

    def measure(metrics):
        before, missing_before = _find(metrics, ("input_reliance", "as is", output_part, score))
        after, missing_after = _find(
            metrics, ("input_reliance", f"{shuffled} shuffled", output_part, score)
        )
        missing = missing_before or missing_after
        change = None if missing else relative_change(before, after, higher_is_better)
        label = f"{score} worse with the {shuffled} shuffled (relative change)"
        return [Check(label, change, ">=", MIN_RELIANCE_DROP, missing)]

    return measure


def _retrieval(metrics):
    checks = []
    for key in ("image_to_text_R@1", "text_to_image_R@1"):
        model, missing_model = _find(metrics, ("retrieval", "model", key))
        chance, missing_chance = _find(metrics, ("retrieval", "chance", key))
        missing = missing_model or missing_chance
        if not missing and not chance:
            missing = f"chance {key} is {chance}"
        ratio = None if missing else model / chance
        checks.append(Check(f"{key} / chance", ratio, ">=", MIN_RETRIEVAL_OVER_CHANCE, missing))
    return checks


def _collapse(metrics):
    value, missing = _find(metrics, ("retrieval", "image_embedding_mean_cosine"))
    label = "image embeddings' mean pairwise cosine"
    return [Check(label, value, "<=", MAX_IMAGE_EMBEDDING_COSINE, missing)]


@dataclasses.dataclass(frozen=True)
class Claim:
    """One headline claim of the README.

    Args:
        name: str. A short name, used on the command line and in failures.
        sentence: str. The README sentence the claim guards, word for word
            (`tests/claims_test.py` finds it in README.md).
        measure: callable. `metrics -> list of Check`.
    """

    name: str
    sentence: str
    measure: callable

    def check(self, metrics):
        return self.measure(metrics)


CLAIMS = (
    Claim(
        "captions",
        "The captions beat both floors on BLEU-4, METEOR and CIDEr.",
        _beats_floors(
            "text", (("BLEU-4", True), ("METEOR", True), ("CIDEr", True)), CAPTION_FLOORS
        ),
    ),
    Claim(
        "next frame",
        "The next frame beats both floors on MSE and SSIM.",
        _beats_floors("image", (("MSE", False), ("SSIM", True)), IMAGE_FLOORS),
    ),
    Claim(
        "caption looks",
        "Shuffling the context images lowers the caption's BLEU-4 by 10% or more.",
        _reliance("BLEU-4", "text", "images", higher_is_better=True),
    ),
    Claim(
        "next frame reads",
        "Shuffling the context captions raises the next frame's MSE by 10% or more.",
        _reliance("MSE", "image", "captions", higher_is_better=False),
    ),
    Claim(
        "retrieval",
        "Retrieval R@1 is at least 10 times chance, image to text and text to image.",
        _retrieval,
    ),
    Claim(
        "grounding",
        "The grounding head's entity F1 beats both grounding floors.",
        _beats_floors("grounding", (("F1", True),), GROUNDING_FLOORS, score_path=("all",)),
    ),
    Claim(
        "no collapse",
        "The image embeddings of distinct frames do not collapse: their mean pairwise "
        "cosine is at most 0.9.",
        _collapse,
    ),
)
CLAIMS_BY_NAME = {claim.name: claim for claim in CLAIMS}


def check_claims(metrics, claims=CLAIMS):
    """Every claim's checks on `metrics`.

    Returns:
        list of `(claim, checks)`; the claim holds when all its checks pass.
    """
    return [(claim, claim.check(metrics)) for claim in claims]


def failed_claims(results):
    """Names of the claims in `check_claims`'s result that do not hold."""
    return [claim.name for claim, checks in results if not all(c.passed for c in checks)]


def format_claims(results):
    """Plain text: each claim, PASS or FAIL, its sentence and its checks."""
    lines = []
    for claim, checks in results:
        status = "PASS" if all(check.passed for check in checks) else "FAIL"
        lines.append(f"{status}  {claim.name}: {claim.sentence}")
        lines += [
            f"      {'ok ' if check.passed else 'NO '} {check.describe()}" for check in checks
        ]
    failed = failed_claims(results)
    lines.append(f"{len(results) - len(failed)} of {len(results)} claims hold.")
    return "\n".join(lines)


def load_metrics(workdir):
    """A workdir's `metrics.json`, with a clear error when there is none."""
    path = os.path.join(workdir, METRICS_JSON_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"{path} does not exist: run `kstory evaluate --workdir {workdir}` "
            "(or `kstory train ... --evaluate`) first."
        )
    try:
        with open(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
