"""Models, enums, errors and pure rules. No I/O."""
