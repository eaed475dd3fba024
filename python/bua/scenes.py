"""Scene names: the daily phases used by the current/future scene tasks (paper sec. 3.3.1)
and by the simulator's ground truth."""
from __future__ import annotations

MORNING_ROUTINE = "morning routine"
MORNING_COMMUTE = "morning commute"
WORKING_HOURS = "working hours"
LUNCH_BREAK = "lunch break"
EVENING_COMMUTE = "evening commute"
EVENING_LEISURE = "evening leisure"
PRE_BEDTIME = "pre-bedtime"
NIGHT_SHIFT = "night shift"
OUTING = "outing"
HOME_LEISURE = "home leisure"

SCENES = (MORNING_ROUTINE, MORNING_COMMUTE, WORKING_HOURS, LUNCH_BREAK, EVENING_COMMUTE,
          EVENING_LEISURE, PRE_BEDTIME, NIGHT_SHIFT, OUTING, HOME_LEISURE)
