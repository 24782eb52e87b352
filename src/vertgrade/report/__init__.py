"""Result files: JSON (with its schema), CSV and NIfTI."""
