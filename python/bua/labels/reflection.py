"""Self-reflective refinement samples (paper sec. 3.3.3, App. N).

From a user's correct feature `Summary`, `make_reflection` writes a flawed draft carrying
1-3 of the six recurring issues of App. N, a critique naming each issue with what is wrong,
and the corrected summary:

1. insufficient abstract summarization - the trait only lists behaviors;
2. inadequate detail association and reasoning - habits lose their time, place and links;
3. poor structural clarity - the layers run together without labels;
4. weak information hierarchy - anchors come first, the trait last;
5. inaccurate temporal pattern analysis - an anchor's time is shifted by 5-10 hours;
6. lack of personalized expression - generic statements replace user-specific ones.
"""
from __future__ import annotations

import random
from dataclasses import replace

from bua.labels.profile import Summary, UserProfile
from bua.textformat import format_time

__all__ = ["ISSUES", "make_reflection"]

ISSUES: dict[str, str] = {
    "abstraction": "insufficient abstract summarization",
    "association": "inadequate detail association and reasoning",
    "structure": "poor structural clarity",
    "hierarchy": "weak information hierarchy",
    "temporal": "inaccurate temporal pattern analysis",
    "personalization": "lack of personalized expression",
}
_ORDER = tuple(ISSUES)


def _render(s: Summary, structure: bool, hierarchy: bool) -> str:
    if structure:  # no labels, one run-on sentence
        parts = [s.trait, ", ".join(s.habits), ", ".join(s.anchors)]
        if hierarchy:
            parts.reverse()
        return "User: " + ", ".join(parts) + "."
    layers = [f"Trait: {s.trait}.", f"Habits: {'; '.join(s.habits)}.",
              f"Anchors: {'; '.join(s.anchors)}."]
    if hierarchy:
        layers.reverse()
    return " ".join(layers)


def make_reflection(prof: UserProfile, rng: random.Random,
                    max_issues: int = 3) -> tuple[str, str, tuple[str, ...]]:
    """Returns (flawed draft, answer = critique + corrected summary, issue keys)."""
    good = prof.summary
    v = prof.vocab
    names = v.behaviors
    # issues that apply to this summary
    timed = [i for i, x in enumerate(prof.anchors[:3])]
    options = list(_ORDER)
    if not timed:
        options.remove("temporal")
    k = rng.randint(1, max(1, min(max_issues, len(options))))
    chosen = set(rng.sample(options, k))
    if "personalization" in chosen:  # it rewrites trait and habits itself
        chosen -= {"abstraction", "association"}
    top = [int(b) for b in prof.counts.argsort()[::-1][:3]]
    draft = good
    notes: list[str] = []
    if "personalization" in chosen:
        draft = replace(draft, trait="a person with a regular daily life",
                        habits=("uses the phone for work and entertainment",))
        notes.append(f"{ISSUES['personalization']}: generic statements instead of this "
                     f"user's traits")
    if "abstraction" in chosen:
        draft = replace(draft, trait="a user of " + ", ".join(names[b] for b in top))
        notes.append(f"{ISSUES['abstraction']}: the trait lists behaviors, not a "
                     f"cognitive-level trait")
    if "association" in chosen:
        draft = replace(draft, habits=tuple(names[b] for b in top))
        notes.append(f"{ISSUES['association']}: habits lack time, place and links")
    if "temporal" in chosen:
        i = rng.choice(timed)
        a = prof.anchors[i]
        wrong = (a.minute + rng.randint(5, 10) * 60) % 1440
        anchors = list(draft.anchors)
        anchors[i] = anchors[i].replace(f"~{format_time(a.minute)}", f"~{format_time(wrong)}")
        draft = replace(draft, anchors=tuple(anchors))
        notes.append(f"{ISSUES['temporal']}: {names[a.behavior]} is ~{format_time(a.minute)}, "
                     f"not ~{format_time(wrong)}")
    structure, hierarchy = "structure" in chosen, "hierarchy" in chosen
    if hierarchy:
        notes.append(f"{ISSUES['hierarchy']}: details come before the trait")
    if structure:
        notes.append(f"{ISSUES['structure']}: trait, habits and anchors run together")
    text = _render(draft, structure, hierarchy)
    order = [x for x in _ORDER if x in chosen]
    notes.sort(key=lambda n: [ISSUES[x] for x in order].index(n.split(":")[0]))
    answer = "Issues: " + "; ".join(notes) + ".\nCorrected: " + good.render()
    return text, answer, tuple(order)
