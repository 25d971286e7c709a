"""Layout planner: an OpenAI-compatible chat client that writes a layout, validated and repaired by the loader."""
from .plan import PlanCache, PlannerError, PlanReplyError, PlanRequest, PlanResult, plan_layout

__all__ = ["PlanCache", "PlannerError", "PlanReplyError", "PlanRequest", "PlanResult", "plan_layout"]
