"""Sources emitted by rescompiler for every spec in specs/ (do not edit; regenerate)."""
