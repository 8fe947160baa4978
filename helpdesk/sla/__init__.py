"""Service levels: policy, business calendar, deadline maths and the SLA tick."""
