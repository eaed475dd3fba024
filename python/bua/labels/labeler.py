"""`Labeler`: every understanding task's answer for a sample, from the data.

    labeler = Labeler(train_dataset)                 # population stats from its events
    labeler.stage1(sample)   -> {task: answer} for reconstruct, current_scene, future_scene,
                                home_work, hobbies
    labeler.stage2(sample)   -> {task: answer} for key_behaviors, patterns, summary
    labeler.reflection(sample) -> (flawed draft, critique + corrected summary)

User-level answers (home_work, hobbies, summary) come from the user's whole log in the
labeler's dataset (its training history), computed once per user and cached; a user the
labeler does not know is profiled from the sample's history window. With
``LabelConfig(user_profile="window")`` every user is profiled from the window, so an answer
holds only what the model's input can tell. Window-level answers (reconstruct, scenes, key
behaviors, patterns) come from the sample alone.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Sequence

from bua.dialogue import (
    CURRENT_SCENE,
    FUTURE_SCENE,
    HOBBIES,
    HOME_WORK,
    KEY_BEHAVIORS,
    PATTERNS,
    RECONSTRUCT,
    REFLECT,
    STAGE1_TASKS,
    STAGE2_EXPLAIN_TASKS,
    SUMMARY,
)
from bua.events import Dataset
from bua.labels import tasks
from bua.labels.profile import PopulationStats, UserProfile
from bua.labels.reflection import make_reflection
from bua.labels.teacher import Teacher

__all__ = ["LabelConfig", "Labeler"]

_TEACHABLE = (CURRENT_SCENE, FUTURE_SCENE, HOME_WORK, HOBBIES, KEY_BEHAVIORS, PATTERNS,
              SUMMARY, REFLECT)


@dataclass(frozen=True)
class LabelConfig:
    reconstruct_last: int = 6        # events listed by the reconstruction answer
    scene_minutes: int = 120         # current / future scene window (sec. 3.3.1: 2 hours)
    max_issues: int = 3              # flaws per reflection draft (1..max_issues)
    seed: int = 0                    # reflection flaws are drawn per sample from this seed
    teacher_tasks: tuple[str, ...] = _TEACHABLE
    teacher_max_ratio: float = 2.0   # a rephrasing longer than this x the answer is refused
    # catch-all location names never taken for home / workplace (Foursquare's "other")
    generic_locations: tuple[str, ...] = ("other",)
    # where a known user's profile (home / work, hobbies, summary, scene roles) comes from:
    # "log", the user's whole log in the labeler's dataset; "window", the sample's history, as
    # for users the labeler does not know
    user_profile: str = "log"

    def __post_init__(self):
        if self.user_profile not in ("log", "window"):
            raise ValueError(f"LabelConfig.user_profile must be 'log' or 'window', "
                             f"not {self.user_profile!r}")


class Labeler:
    def __init__(self, dataset: Dataset, *, population=None, config: LabelConfig | None = None,
                 teacher: Teacher | None = None):
        self.dataset = dataset
        self.vocab = dataset.vocab
        self.config = config or LabelConfig()
        self.population = PopulationStats.from_events(
            self.vocab, population if population is not None else dataset)
        self._users = {u.user_id: u for u in dataset.users}
        self._generic = frozenset(self.vocab.location_id(n) for n in
                                  self.config.generic_locations if self.vocab.has_location(n))
        self._profiles: dict[str, UserProfile] = {}
        self._user_answers: dict[tuple[str, str], str] = {}
        self.teacher = teacher
        bad = set(self.config.teacher_tasks) - set(_TEACHABLE)
        if bad:
            raise ValueError(f"tasks {sorted(bad)} must keep their exact computed answers; "
                             f"a teacher may rephrase only {_TEACHABLE}")
        self._teacher_cache: dict[tuple[str, str], str] = {}
        self.teacher_failures = 0

    # ------------------------------------------------------------------ profiles
    def profile(self, user_id: str, history: Sequence | None = None) -> UserProfile:
        """The user's profile from the labeler's dataset (cached), else from `history`; with
        ``user_profile="window"`` from `history` whenever it is given."""
        if history and self.config.user_profile == "window":
            return UserProfile.build(history, self.vocab, self.population, self._generic)
        p = self._profiles.get(user_id)
        if p is not None:
            return p
        u = self._users.get(user_id)
        if u is not None:
            p = UserProfile.build(u.events, self.vocab, self.population, self._generic)
            self._profiles[user_id] = p
            return p
        if history:
            return UserProfile.build(history, self.vocab, self.population, self._generic)
        raise KeyError(f"user {user_id!r} is not in the labeler's dataset and no history "
                       f"was given")

    def _profile_for(self, sample) -> UserProfile:
        return self.profile(sample.user_id, sample.history)

    def _user_answer(self, sample, task: str) -> str:
        key = (sample.user_id, task)
        a = self._user_answers.get(key)
        if a is None:
            p = self._profile_for(sample)
            if task == HOME_WORK:
                a = tasks.home_work_answer(p)
            elif task == HOBBIES:
                a = tasks.hobbies_answer(p)
            else:
                a = p.summary.render()
            if sample.user_id in self._users and self.config.user_profile == "log":
                self._user_answers[key] = a
        return a

    # ------------------------------------------------------------------ answers
    def answer(self, task: str, sample) -> str:
        c = self.config
        h = sample.history
        if not h:
            raise ValueError(f"sample of user {sample.user_id!r} has an empty history")
        if task == RECONSTRUCT:
            return tasks.reconstruct(h, self.vocab, c.reconstruct_last)
        if task == CURRENT_SCENE:
            a = tasks.current_scene(h, self._profile_for(sample), self.vocab, c.scene_minutes)
        elif task == FUTURE_SCENE:
            a = tasks.future_scene(h, getattr(sample, "future", ()), self._profile_for(sample),
                               self.vocab, c.scene_minutes)
        elif task in (HOME_WORK, HOBBIES, SUMMARY):
            a = self._user_answer(sample, task)
        elif task == KEY_BEHAVIORS:
            a = tasks.key_behaviors(h, self.vocab)
        elif task == PATTERNS:
            a = tasks.patterns(h, self.vocab)
        elif task == REFLECT:
            return self.reflection(sample)[1]
        else:
            raise KeyError(f"no labeler for task {task!r}")
        return self._teach(task, a, sample)

    def stage1(self, sample, tasks: Sequence[str] = STAGE1_TASKS) -> dict[str, str]:
        return {t: self.answer(t, sample) for t in tasks}

    def stage2(self, sample) -> dict[str, str]:
        return {t: self.answer(t, sample) for t in STAGE2_EXPLAIN_TASKS}

    def reflection(self, sample) -> tuple[str, str]:
        """(flawed draft summary, critique naming its App. N issues + corrected summary)."""
        key = f"{self.config.seed}:{sample.user_id}:{getattr(sample, 'index', -1)}:" \
              f"{sample.history[-1].order_key}"
        rng = random.Random(zlib.crc32(key.encode()))
        draft, answer, _ = make_reflection(self._profile_for(sample), rng,
                                           self.config.max_issues)
        return draft, self._teach(REFLECT, answer, sample)

    # ------------------------------------------------------------------ teacher
    def _teach(self, task: str, answer: str, sample) -> str:
        if self.teacher is None or task not in self.config.teacher_tasks:
            return answer
        key = (task, answer)
        hit = self._teacher_cache.get(key)
        if hit is not None:
            return hit
        out = answer
        try:
            got = self.teacher.rephrase(task, answer, {"user_id": sample.user_id})
            got = got.strip() if isinstance(got, str) else ""
            if got and len(got) <= self.config.teacher_max_ratio * len(answer) + 20 \
                    and got.count("\n") <= answer.count("\n"):
                out = got
            else:
                self.teacher_failures += 1
        except Exception:  # a teacher is best effort: keep the computed answer
            self.teacher_failures += 1
        self._teacher_cache[key] = out
        return out
