"""Tables from results files: one row per model and variant, for Markdown, CSV and the terminal."""
