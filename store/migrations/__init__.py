"""Alembic migrations of the store, shipped inside the package so an installed leadcast can upgrade itself."""
