"""The dashboard's page files, run by ``app.py`` through ``st.navigation`` (one page per file).

The shared UI they import lives in ``dashboard_ui``. ``from pages import _ui`` and
``pages._charts`` / ``pages._frame`` still resolve to it, for code written before the move.
"""

import sys

from dashboard_ui import charts as _charts
from dashboard_ui import frame as _frame
from dashboard_ui import ui as _ui

sys.modules[__name__ + "._charts"] = _charts
sys.modules[__name__ + "._frame"] = _frame
sys.modules[__name__ + "._ui"] = _ui
