"""Schemathesis hooks for the admin API run (crates/portico/tests/api_shape.rs).

The run starts a real `portico server`, whose built-in gateway `default` binds the ports of
its listeners on this machine: generated updates of that gateway are skipped, so the run
never opens ports another test may be using.
"""

import json

import schemathesis


@schemathesis.hook
def filter_path_parameters(ctx, path_parameters):
    operation = ctx.operation
    if (
        operation is not None
        and operation.method.lower() == "put"
        and operation.path == "/api/v1/gateways/{name}"
        and path_parameters
        and str(path_parameters.get("name", "")).lower() == "default"
    ):
        return False
    return True


def _is_default_gateway(item):
    return isinstance(item, dict) and str(item.get("name", "")).lower() == "default"


@schemathesis.hook
def filter_body(ctx, body):
    # An apply document may carry the built-in gateway too: skipped for the same reason.
    operation = ctx.operation
    if operation is None or operation.path != "/api/v1/apply" or not isinstance(body, dict):
        return True
    gateways = body.get("gateways")
    if isinstance(gateways, list) and any(_is_default_gateway(g) for g in gateways):
        return False
    if body.get("kind") in ("gateway", "gateways") and _is_default_gateway(body):
        return False
    return True


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(
            f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None
        ) + "}"
    return json.dumps(str(v))


@schemathesis.serializer("application/toml")
def toml_serializer(ctx, value):
    """TOML for `POST /api/v1/apply` (inline tables; TOML has no null, so nulls are left out)."""
    if isinstance(value, dict):
        text = "\n".join(
            f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in value.items() if x is not None
        )
    else:
        text = _toml_value(value)
    return text.encode("utf-8")


# schemathesis 4.x scans every string of every JSON answer for links, and its scan raises on
# a string that starts like a URL but is not one (`http://[` in a description the run itself
# stored): an error of the tool's scan, not an answer. Such strings are skipped.
try:
    from schemathesis.engine import observations as _observations

    _same_origin_path = _observations._same_origin_path

    def _tolerant_same_origin_path(value, origin):
        try:
            return _same_origin_path(value, origin)
        except ValueError:
            return None

    _observations._same_origin_path = _tolerant_same_origin_path
except (ImportError, AttributeError):
    pass
