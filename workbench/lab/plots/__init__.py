"""plotly figures for notebooks and reports, one module per subject.

Every function returns a ``plotly.graph_objects.Figure`` built from the DataFrames that
``workbench.lab`` queries and ``workbench.analysis`` computes; nothing here queries or
computes pipeline results itself. Static figures render in HTML reports; a live front end
can wrap one in a ``FigureWidget``.
"""
