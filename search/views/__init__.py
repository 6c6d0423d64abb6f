"""The views of a study: the front, ranking and cost (``cost``), the text report and its drawing
(``report``, ``plots``), export and verify, the dashboard's notes and figures."""
