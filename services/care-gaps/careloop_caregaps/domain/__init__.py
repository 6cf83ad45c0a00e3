"""Pure care-gap logic: the measure library, the evaluator and the gap's lifecycle."""
