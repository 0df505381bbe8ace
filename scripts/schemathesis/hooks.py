"""Schemathesis hooks for the admin API run (crates/portico/tests/api_shape.rs).

The run starts a real `portico server`, whose built-in gateway `default` binds the ports of
its listeners on this machine: generated updates of that gateway are skipped, so the run
never opens ports another test may be using.
"""

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
