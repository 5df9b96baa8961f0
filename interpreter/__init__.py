"""interp: a workflow interpreter driven by PostgreSQL.

The migrations and the seeds ship inside this package (``schema/`` and
``seed_sql/``, read with importlib.resources), so an installed wheel needs no
checkout; see docs/adr/0004-packaged-schema-and-seeds.md.
"""

__version__ = "0.1.0"
