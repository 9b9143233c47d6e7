"""Gatehouse domain code: everything below the HTTP edge in app.py."""
