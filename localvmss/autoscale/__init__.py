"""Azure-style autoscale: settings, metric catalogue, rule engine and target tracking (pure)."""

from localvmss.autoscale.engine import Decision, Observation, evaluate, select_profile
from localvmss.autoscale.metrics_catalog import CATALOG, build_query, known_metric_names
from localvmss.autoscale.settings import AutoscaleSetting, Profile, Rule, parse_autoscale_setting
from localvmss.autoscale.target_tracking import Recommendation, recommend

__all__ = [
    "CATALOG",
    "AutoscaleSetting",
    "Decision",
    "Observation",
    "Profile",
    "Recommendation",
    "Rule",
    "build_query",
    "evaluate",
    "known_metric_names",
    "parse_autoscale_setting",
    "recommend",
    "select_profile",
]
