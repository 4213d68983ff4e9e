"""Tasks, answer rules and training text: everything a job reads, none of it touching a model.

Tasks: task.py (the Task protocol, held-out split, thought budget), synthetic.py and graphs.py (seeded
synthetic tasks with worked scratchpads), reasoning_gym.py, bigbench.py with bigbench_metrics.py (BIG-bench
JSON tasks and metrics as BIG-bench defines them), registry.py (one string names any task), answers.py (answer
extraction rules). Training text: corpus.py and sources.py (document streams), windows.py (token windows of
long documents), realtext.py and prose.py (the offline real-text corpus), thought_docs.py (documents with
short thoughts). The data side of the seed methods: early_experience.py, refine.py, trelawney.py.

Optional dependencies (reasoning-gym, pyarrow, datasets) are imported only when used.
"""

from ponder.data.bigbench import BigBenchError, BigBenchTask, load_task_json
from ponder.data.corpus import (
    SUPPORTED_SUFFIXES,
    CorpusError,
    iter_task_documents,
    read_documents,
    render_problem,
    split_text_documents,
    task_corpus,
    tokenize_documents,
)
from ponder.data.reasoning_gym import ReasoningGymTask, reasoning_gym_datasets
from ponder.data.registry import DEMO_TASK, UnknownTaskError, describe_task_specs, get_task, known_tasks
from ponder.data.synthetic import WORDS, Addition, ListSort, Multiplication, ShiftCipher
from ponder.data.task import (
    HELD_OUT_FRACTION,
    GeneratedTask,
    Problem,
    Split,
    Task,
    first_line_answer,
    is_held_out,
    normalize_answer,
)

__all__ = [
    "DEMO_TASK",
    "HELD_OUT_FRACTION",
    "SUPPORTED_SUFFIXES",
    "WORDS",
    "Addition",
    "BigBenchError",
    "BigBenchTask",
    "CorpusError",
    "GeneratedTask",
    "ListSort",
    "Multiplication",
    "Problem",
    "ReasoningGymTask",
    "ShiftCipher",
    "Split",
    "Task",
    "UnknownTaskError",
    "describe_task_specs",
    "first_line_answer",
    "get_task",
    "is_held_out",
    "iter_task_documents",
    "known_tasks",
    "load_task_json",
    "normalize_answer",
    "read_documents",
    "reasoning_gym_datasets",
    "render_problem",
    "split_text_documents",
    "task_corpus",
    "tokenize_documents",
]
