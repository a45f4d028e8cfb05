"""persona_vectors: activation-space persona arithmetic for language models.

Extract persona directions from the residual stream, do arithmetic on them, steer generation along them,
read out who the model thinks it is, and monitor persona shift during finetuning.

>>> import persona_vectors as pv                      # doctest: +SKIP
>>> model = pv.load_model()                           # embedded SmolLM2-135M-Instruct, offline
>>> vec = pv.extract_vector(model, persona_convs, baseline_convs, layers="all")
>>> vec.save("vectors/pirate")
"""

from .aggregators import logistic, mean_diff, pca
from .extract import (
    extract_system_prompt_vector,
    extract_vector,
    pick_layer,
    record_prompt_contrast,
    relative_norms,
    separation_auroc,
    vector_from_recordings,
)
from .io import VectorFileError, load_vector, save_vector
from .models import ModelInfo, ModelLoadError, PersonaModel, PromptTooLongError, load_model
from .record import Recording, record, record_generated
from .sites import Site
from .space import PersonaSpace, role_matrix
from .export import export_control_vector_gguf
from .vector import PersonaVector, Provenance, VectorMismatchError
from .steer import SteeringError, SteeringHandle, SteerSpec, effective_alpha, patch, projection_threshold, steer
from .sweep import (
    JsonlStore,
    StoreCorruptError,
    SweepConfig,
    SweepConfigError,
    SweepStoreError,
    SweepStoreLockedError,
    run_sweep,
    summarize,
)
from .readout import (
    DEFAULT_IDENTITY_CANDIDATES,
    SCORING_MODES,
    CandidateSet,
    CoherenceScore,
    ControlledUserReadout,
    GroupReadout,
    IdentityReadout,
    RobustnessCheck,
    UserControls,
    available_candidate_sets,
    group_readout,
    load_candidate_set,
    load_user_controls,
    user_readout_with_controls,
    candidate_names,
    coherence,
    identity_readout,
    identity_readout_batch,
    is_coherent,
    score_continuations,
    user_identity_readout,
)
from .personas import (
    CARD_PERSONAS,
    PersonaQuality,
    RoleMeans,
    VectorCache,
    assistant_axis,
    extract_persona,
    fact_vector,
    get_persona_vector,
    list_personas,
    persona_quality,
    role_contrast,
    role_means,
    role_vector,
    system_for,
)

__version__ = "0.1.0"

__all__ = [
    "ModelInfo",
    "ModelLoadError",
    "PersonaModel",
    "PromptTooLongError",
    "PersonaVector",
    "Provenance",
    "Recording",
    "Site",
    "VectorFileError",
    "VectorMismatchError",
    "extract_system_prompt_vector",
    "extract_vector",
    "load_model",
    "load_vector",
    "logistic",
    "mean_diff",
    "pca",
    "pick_layer",
    "record",
    "record_generated",
    "record_prompt_contrast",
    "relative_norms",
    "save_vector",
    "separation_auroc",
    "vector_from_recordings",
    "PersonaSpace",
    "role_matrix",
    "export_control_vector_gguf",
    "SteerSpec",
    "SteeringError",
    "SteeringHandle",
    "effective_alpha",
    "patch",
    "projection_threshold",
    "steer",
    "JsonlStore",
    "StoreCorruptError",
    "SweepConfig",
    "SweepConfigError",
    "SweepStoreError",
    "SweepStoreLockedError",
    "run_sweep",
    "summarize",
    "DEFAULT_IDENTITY_CANDIDATES",
    "SCORING_MODES",
    "CandidateSet",
    "CoherenceScore",
    "ControlledUserReadout",
    "GroupReadout",
    "IdentityReadout",
    "RobustnessCheck",
    "UserControls",
    "available_candidate_sets",
    "group_readout",
    "load_candidate_set",
    "load_user_controls",
    "user_readout_with_controls",
    "candidate_names",
    "coherence",
    "identity_readout",
    "identity_readout_batch",
    "is_coherent",
    "score_continuations",
    "user_identity_readout",
    "CARD_PERSONAS",
    "PersonaQuality",
    "RoleMeans",
    "VectorCache",
    "assistant_axis",
    "extract_persona",
    "fact_vector",
    "get_persona_vector",
    "list_personas",
    "persona_quality",
    "role_contrast",
    "role_means",
    "role_vector",
    "system_for",
]

# finetuning shim and persona-shift monitoring
from .finetune import FinetuneConfig, FinetuneResult, PreventativeSteering, finetune, load_adapter  # noqa: E402
from .monitor import activation_means, finetuning_shift, projection_difference, shift_figure  # noqa: E402

__all__ += [
    "FinetuneConfig",
    "FinetuneResult",
    "PreventativeSteering",
    "activation_means",
    "finetune",
    "finetuning_shift",
    "load_adapter",
    "projection_difference",
    "shift_figure",
]

# instruments: the archetype judge, its validation on real text, and the statistics module
from . import stats  # noqa: E402
from .judge import LABELS as JUDGE_LABELS, EmbeddingJudge, JudgeResult, LLMJudge  # noqa: E402
from .judge_validation import corrected_label_shares, crossed_group_cv, validate_labelled_file  # noqa: E402
from .stats import (  # noqa: E402
    cluster_bootstrap,
    cohen_kappa,
    corrected_shares,
    ece,
    fisher_exact,
    gee_logistic,
    mixed_logistic,
    newcombe_diff,
    permutation_test_directions,
    permutation_test_within,
    reliability_curve,
    wilson,
)

__all__ += [
    "stats",
    "JUDGE_LABELS",
    "EmbeddingJudge",
    "JudgeResult",
    "LLMJudge",
    "corrected_label_shares",
    "crossed_group_cv",
    "validate_labelled_file",
    "cluster_bootstrap",
    "cohen_kappa",
    "corrected_shares",
    "ece",
    "fisher_exact",
    "gee_logistic",
    "mixed_logistic",
    "newcombe_diff",
    "permutation_test_directions",
    "permutation_test_within",
    "reliability_curve",
    "wilson",
]

# choosing a steering strength
from .calibrate import CalibrationError, CalibrationResult, LayerScan, calibrate_alpha, layer_scan  # noqa: E402

__all__ += ["CalibrationError", "CalibrationResult", "LayerScan", "calibrate_alpha", "layer_scan"]
