"""Loss-landscape dashboard: ``streamlit run app.py`` (add ``-- --spec file.py:build`` for your model).

The app lives in ``dashboard_ui/app.py`` so that an installed package carries it
(``landscape dashboard`` starts it); this file keeps the checkout's command working.
"""

from dashboard_ui.app import main

main()
