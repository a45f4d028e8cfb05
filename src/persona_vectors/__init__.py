"""persona_vectors: activation-space persona arithmetic for language models.

Extract persona directions from the residual stream, do arithmetic on them, steer generation along them,
read out who the model thinks it is, and monitor persona shift during finetuning.

>>> import persona_vectors as pv                      # doctest: +SKIP
>>> model = pv.load_model()                           # embedded SmolLM2-135M-Instruct, offline
>>> vec = pv.extract_vector(model, persona_convs, baseline_convs, layers="all")
>>> vec.save("vectors/pirate")

The public names, by room in data-flow order; ``__all__`` is this one list.
"""

from .vector import PersonaVector, Provenance, VectorMismatchError, library_version
from .sites import Site
from .models import ModelInfo, ModelLoadError, PersonaModel, PromptTooLongError, load_model
from .io import VectorFileError, load_vector, save_vector
from .record import Recording, record, record_generated
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
from .space import PersonaSpace, role_matrix
from .export import export_control_vector_gguf
from .steer import SteeringError, SteeringHandle, SteerSpec, effective_alpha, patch, projection_threshold, steer
from .conversation import (
    ConversationReadout,
    TurnProjections,
    conversation_readout,
    load_drift_scripts,
    run_scripts,
    turn_projections,
)
from .calibrate import CalibrationError, CalibrationResult, LayerScan, calibrate_alpha, layer_scan
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
    TargetBits,
    UserControls,
    available_candidate_sets,
    candidate_names,
    coherence,
    group_readout,
    identification_bits,
    identity_readout,
    identity_readout_batch,
    is_coherent,
    load_candidate_set,
    load_user_controls,
    score_continuations,
    target_bits,
    user_identity_readout,
    user_readout_with_controls,
)
from . import stats
from .stats import (
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
from .judge import LABELS as JUDGE_LABELS, EmbeddingJudge, JudgeModelMissingError, JudgeResult, LLMJudge
from .judge_validation import corrected_label_shares, crossed_group_cv, validate_labelled_file
from .personas import (
    CARD_PERSONAS,
    PersonaQuality,
    RoleMeans,
    Route,
    VectorCache,
    assistant_axis,
    extract_persona,
    fact_vector,
    get_persona_vector,
    list_personas,
    persona_quality,
    register_route,
    role_contrast,
    role_means,
    role_vector,
    system_for,
)
from .finetune import FinetuneConfig, FinetuneResult, PreventativeSteering, finetune, load_adapter
from .monitor import activation_means, finetuning_shift, projection_difference, shift_figure

#: The installed distribution's version (package metadata); ``"0+unknown"`` when running from an uninstalled tree.
__version__ = library_version()

__all__ = [
    # values
    "PersonaVector", "Provenance", "VectorMismatchError", "Site",
    # models
    "ModelInfo", "ModelLoadError", "PersonaModel", "PromptTooLongError", "load_model",
    # files
    "VectorFileError", "load_vector", "save_vector", "export_control_vector_gguf",
    # recording and extraction
    "Recording", "record", "record_generated", "logistic", "mean_diff", "pca",
    "extract_system_prompt_vector", "extract_vector", "pick_layer", "record_prompt_contrast", "relative_norms",
    "separation_auroc", "vector_from_recordings",
    # persona space
    "PersonaSpace", "role_matrix",
    # steering and choosing its strength
    "SteerSpec", "SteeringError", "SteeringHandle", "effective_alpha", "patch", "projection_threshold", "steer",
    "CalibrationError", "CalibrationResult", "LayerScan", "calibrate_alpha", "layer_scan",
    # multi-turn conversations and persona drift
    "ConversationReadout", "TurnProjections", "conversation_readout", "load_drift_scripts", "run_scripts",
    "turn_projections",
    # sweeps
    "JsonlStore", "StoreCorruptError", "SweepConfig", "SweepConfigError", "SweepStoreError",
    "SweepStoreLockedError", "run_sweep", "summarize",
    # read-outs
    "DEFAULT_IDENTITY_CANDIDATES", "SCORING_MODES", "CandidateSet", "CoherenceScore", "ControlledUserReadout",
    "GroupReadout", "IdentityReadout", "RobustnessCheck", "UserControls", "available_candidate_sets",
    "candidate_names", "coherence", "group_readout", "identity_readout", "identity_readout_batch", "is_coherent",
    "load_candidate_set", "load_user_controls", "score_continuations", "user_identity_readout",
    "user_readout_with_controls", "TargetBits", "identification_bits", "target_bits",
    # instruments: statistics, the archetype judge and its validation on real text
    "stats", "cluster_bootstrap", "cohen_kappa", "corrected_shares", "ece", "fisher_exact", "gee_logistic",
    "mixed_logistic", "newcombe_diff", "permutation_test_directions", "permutation_test_within",
    "reliability_curve", "wilson",
    "JUDGE_LABELS", "EmbeddingJudge", "JudgeModelMissingError", "JudgeResult", "LLMJudge",
    "corrected_label_shares", "crossed_group_cv", "validate_labelled_file",
    # named personas and their routes
    "CARD_PERSONAS", "PersonaQuality", "RoleMeans", "Route", "VectorCache", "assistant_axis", "extract_persona",
    "fact_vector", "get_persona_vector", "list_personas", "persona_quality", "register_route", "role_contrast",
    "role_means", "role_vector", "system_for",
    # finetuning and persona-shift monitoring
    "FinetuneConfig", "FinetuneResult", "PreventativeSteering", "activation_means", "finetune", "finetuning_shift",
    "load_adapter", "projection_difference", "shift_figure",
]
