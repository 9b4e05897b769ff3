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
    tokenizer run on Java; the tokenizer starts one Java process per call,
    so several prediction sets are best scored in one call.

    Args:
        references: list of str, or list of lists of str (several references).
        predictions: list of str aligned with `references`, or a dict of
            name -> such a list.

    Returns:
        The scores dict, or a dict of name -> scores for a dict of sets.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    named_predictions = predictions if isinstance(predictions, dict) else {None: predictions}
    for name, rows in named_predictions.items():
        if len(references) != len(rows):
            raise ValueError(
                f"{len(references)} references for {len(rows)} predictions"
                + ("." if name is None else f" ({name}).")
            )
    gts = {
        str(i): [{"caption": r} for r in ([refs] if isinstance(refs, str) else refs)]
        for i, refs in enumerate(references)
    }
    # One tokenizer call for every set: keys are "<set index>/<row>".
    sets = list(named_predictions)
    res = {
        f"{n}/{i}": [{"caption": prediction}]
        for n, name in enumerate(sets)
        for i, prediction in enumerate(named_predictions[name])
    }
    scores = {}
    with contextlib.redirect_stdout(io.StringIO()):
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        for n, name in enumerate(sets):
            # An empty prediction would crash METEOR's Java process.
            rows = {str(i): [res[f"{n}/{i}"][0] or "<empty>"] for i in range(len(references))}
            bleu, _ = Bleu(4).compute_score(gts, rows, verbose=0)
            meteor, _ = _meteor_scorer().compute_score(gts, rows)
            rouge, _ = Rouge().compute_score(gts, rows)
            cider, _ = Cider().compute_score(gts, rows)
            scores[name] = {f"BLEU-{i + 1}": float(value) for i, value in enumerate(bleu)}
            scores[name].update(
                {"METEOR": float(meteor), "ROUGE-L": float(rouge), "CIDEr": float(cider)}
            )
    return scores if isinstance(predictions, dict) else scores[None]


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
    """COCO scores when Java is present; otherwise the pure-Python ones, with a warning.

    Args:
        references: list of str, or list of lists of str.
        predictions: list of str aligned with `references`, or a dict of
            name -> such a list, scored together (faster: one tokenizer
            call), giving a dict of name -> scores.
    """
    if java_available():
        return coco_caption_scores(references, predictions)
    logger.warning(
        "Java is not installed: METEOR, CIDEr and the PTB tokenizer need it. Reporting nltk "
        "corpus BLEU and keras-hub ROUGE-L instead; install a Java runtime for the full protocol."
    )
    if isinstance(predictions, dict):
        return {name: python_caption_scores(references, rows) for name, rows in predictions.items()}
    return python_caption_scores(references, predictions)
