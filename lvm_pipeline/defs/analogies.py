"""`vector_arithmetic`: word analogies in the bank's encoder, and v[i+1] - v[i] + v[i+2] -> v[i+3] within the test
articles beside copy_last and every family's current model (lvm_pipeline.evaluation.analogies)."""

import json

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.defs.datasets import current_sequences, sequences_dir, training_sequences
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.defs.training import lvm_checkpoint
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.analogies import (
    VectorArithmetic,
    render_markdown,
    result_json,
    within_articles,
    word_analogies,
)
from lvm_pipeline.experiments.comparison import trained_entry
from lvm_pipeline.files import atomic_write
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.training.runs import current_run_dir


class VectorArithmeticConfig(Config):
    max_questions_per_section: int = Field(default=0, description="Analogy questions per section (a seeded sample); "
                                                                  "0: all 19,544.")
    n_resamples: int = Field(default=1000, description="Bootstrap resamples behind every CI.")
    seed: int = 0


def current_checkpoints(sequences, bank_encoder, log) -> list[ModelPredictor]:
    """Each family's current checkpoint that loads on these sequences; the others are logged and left out."""
    predictors = []
    for family in FAMILY_NAMES:
        run_dir = current_run_dir(settings().checkpoints_dir, family)
        try:
            found = trained_entry(run_dir, family, None, sequences, encoder=bank_encoder,
                                  cache_dir=sequences_dir()) if run_dir else "not trained yet"
        except PipelineError as error:  # e.g. a text-view model without the bank's encoder
            found = f"left out: {error}"
        if isinstance(found, str):
            log.info(f"{family}: {found}")
        else:
            predictors.append(found.predictor)
    return predictors


@asset(group_name="experiments", deps=[training_sequences, lvm_checkpoint], kinds={"markdown", "json"})
def vector_arithmetic(context: AssetExecutionContext, config: VectorArithmeticConfig,
                      encoder: EncoderResource) -> MaterializeResult:
    """Does b - a + c land on d? Word analogies (questions-words, top-1/3 with CIs) in the bank's encoder, and the
    arithmetic within test articles against copy_last and the models, inputs excluded, full bank."""
    sequences = current_sequences()
    bank = sequences.bank
    bank_encoder = encoder.for_bank(bank, context.log)
    analogies = None
    if bank_encoder is None:
        context.log.warning("word analogies left out: they need the bank's encoder")
    else:
        analogies = word_analogies(bank_encoder, max_per_section=config.max_questions_per_section or None,
                                   n_resamples=config.n_resamples, seed=config.seed)
    models = current_checkpoints(sequences, bank_encoder, context.log)
    within = within_articles(sequences, models, n_resamples=config.n_resamples, seed=config.seed)
    result = VectorArithmetic(analogies, within)
    about = {"bank_version": bank.version, "sequences_version": sequences.version,
             "encoder_fingerprint": bank.manifest["encoder_fingerprint"], "n_resamples": config.n_resamples}
    text = render_markdown(result, about)
    out_dir = settings().reports_dir
    markdown = atomic_write(out_dir / "vector_arithmetic.md", lambda f: f.write(text.encode()))
    document = json.dumps(result_json(result, about), indent=2).encode()
    json_path = atomic_write(out_dir / "vector_arithmetic.json", lambda f: f.write(document))
    overall = {g.name: g.estimates for g in analogies.groups} if analogies else {}
    return MaterializeResult(metadata={
        **({"analogy_top_1": overall["all"]["hit_at_1"].value, "analogy_top_3": overall["all"]["hit_at_3"].value,
            "analogy_questions": len(analogies.analogies), "vocabulary_size": analogies.vocabulary_size}
           if analogies else {}),
        "article_queries": len(within.queries),
        "bank_size": within.bank_size,
        "arithmetic_hit_at_1": within.lines["arithmetic"].estimates["hit_at_1"].value,
        "copy_last_hit_at_1": within.lines["copy_last"].estimates["hit_at_1"].value,
        "models": len(models),
        "report": MetadataValue.md(text),
        "markdown": MetadataValue.path(str(markdown)),
        "json": MetadataValue.path(str(json_path)),
    })
