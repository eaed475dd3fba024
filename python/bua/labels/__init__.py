"""Understanding-task labels computed from the data (paper App. A, sec. 3.3, App. N).

`Labeler` is the entry point; `profile` holds the user-level statistics, `facts` what a window
shows (the statistics of the window-level answers and every item they can truthfully state),
`tasks` the answer writers, `reflection` the stage-3 flawed summaries, `teacher` the optional
rephrasing hook, `scenes` the scene names.
"""
from __future__ import annotations

from bua.labels.labeler import LabelConfig, Labeler
from bua.labels.profile import PopulationStats, Summary, UserProfile
from bua.labels.reflection import ISSUES, make_reflection
from bua.labels.teacher import LlamaCppTeacher, OpenAITeacher, Teacher
from bua.scenes import SCENES

__all__ = ["ISSUES", "LabelConfig", "Labeler", "LlamaCppTeacher", "OpenAITeacher",
           "PopulationStats", "SCENES", "Summary", "Teacher", "UserProfile", "make_reflection"]
