"""Caption scores by the COCO caption protocol (pycocoevalcap), with a fallback."""

import contextlib
import functools
import io
import logging
import shutil

logger = logging.getLogger("kstory.evaluation")

COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def java_available():
    return shutil.which("java") is not None


@functools.lru_cache(maxsize=None)
def _meteor_scorer():
    """One METEOR Java process per Python process: starting one (the JVM and
    its paraphrase tables) costs seconds, and an evaluation scores five sets."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def start_caption_scorers():
    """Starts METEOR's Java process now, when Java is installed, so that it
    loads its paraphrase tables (seconds) while other work runs."""
    if java_available():
        _meteor_scorer()


def coco_caption_scores(references, predictions):
    """BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr, PTB-tokenised, as in VIST work.

    This is the protocol of the StoryReasoning paper. METEOR and the PTB
    tokenizer run on Java.

    Args:
        references: list of str, or list of lists of str (several references).
        predictions: list of str, aligned with `references`.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references for {len(predictions)} predictions.")
    gts = {
        str(i): [{"caption": r} for r in ([refs] if isinstance(refs, str) else refs)]
        for i, refs in enumerate(references)
    }
    res = {str(i): [{"caption": prediction}] for i, prediction in enumerate(predictions)}
    with contextlib.redirect_stdout(io.StringIO()):
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        # An empty prediction would crash METEOR's Java process.
        res = {key: [value[0] or "<empty>"] for key, value in res.items()}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        meteor, _ = _meteor_scorer().compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    scores = {f"BLEU-{n + 1}": float(value) for n, value in enumerate(bleu)}
    scores.update({"METEOR": float(meteor), "ROUGE-L": float(rouge), "CIDEr": float(cider)})
    return scores


def python_caption_scores(references, predictions):
    """Pure-Python BLEU-1..4 (nltk corpus BLEU) and ROUGE-L (keras-hub), no Java."""
    import keras_hub
    from nltk.translate.bleu_score import corpus_bleu

    def words(text):
        return text.lower().replace(",", " ").replace(".", " ").replace(";", " ").split()

    reference_lists = [
        [words(r) for r in ([refs] if isinstance(refs, str) else refs)] for refs in references
    ]
    hypotheses = [words(prediction) for prediction in predictions]
    scores = {}
    for n in range(1, 5):
        weights = tuple([1.0 / n] * n)
        scores[f"BLEU-{n}"] = float(corpus_bleu(reference_lists, hypotheses, weights=weights))
    rouge = keras_hub.metrics.RougeL()
    rouge.update_state(
        [" ".join(refs[0]) for refs in reference_lists], [" ".join(h) for h in hypotheses]
    )
    scores["ROUGE-L"] = float(rouge.result()["f1_score"])
    return scores


def caption_scores(references, predictions):
    """COCO scores when Java is present; otherwise the pure-Python ones, with a warning."""
    if java_available():
        return coco_caption_scores(references, predictions)
    logger.warning(
        "Java is not installed: METEOR, CIDEr and the PTB tokenizer need it. Reporting nltk "
        "corpus BLEU and keras-hub ROUGE-L instead; install a Java runtime for the full protocol."
    )
    return python_caption_scores(references, predictions)
