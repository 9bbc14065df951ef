"""AI and rule-based judges that label response pairs, and reports that measure them."""
