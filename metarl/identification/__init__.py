"""Task identification: transition contexts, the ProtoNet encoder, its training and the few-shot identifier."""
