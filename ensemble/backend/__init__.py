"""The Python-backend model source copied into every version folder of the repository."""
