"""Online learning: outcomes joined to the scores a river model gave (outcomes), the model
learning from them and its snapshots registered as versions (learner)."""
