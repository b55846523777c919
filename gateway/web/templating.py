"""The pages' jinja2 templates, loaded once at the first page view.

A daemon that nobody looks at never imports jinja2 (a box's memory is mostly imports); the overview,
the meter page, the sign-in form and the printable bill all render through this one environment.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jinja2 import Environment


@functools.cache
def page_templates() -> Environment:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("gateway.web", "templates"), autoescape=select_autoescape())


def render(template: str, /, **context: object) -> str:
    return str(page_templates().get_template(template).render(**context))
