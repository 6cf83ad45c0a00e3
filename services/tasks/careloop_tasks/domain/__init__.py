"""Pure logic of tasks: the state machine, rules, titles, round-robin; no I/O."""
