"""A Charter step in Python."""
import charter
from wit_world.imports import log


def run(input):
    name = input.get("name")
    if not isinstance(name, str):
        raise charter.Fatal("input.name (string) is required")
    log.write(log.Level.INFO, f"greeting {name}")
    return {"hello": name}


WitWorld = charter.step(run)
