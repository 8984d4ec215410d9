"""Analysis of a finished study from its files alone (no Ray): loaders (``results``), derived
tables (``tables``), charts and pictures, and the HTML/Markdown report (``report``).

    python -m analysis.report runs/<name>
"""
