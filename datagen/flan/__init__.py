"""FLAN-style conversion: labelled datasets rendered through instruction templates."""
