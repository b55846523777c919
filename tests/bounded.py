"""A bounded await for tests: a step that never ends fails the test, naming the step and what every task
was waiting on, instead of leaving a CI worker idle in epoll until the job is killed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable
from typing import TypeVar

import pytest

T = TypeVar("T")


def task_stacks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    return out.getvalue()


async def within(seconds: float, step: str, awaitable: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"{step}: not done within {seconds:g} s; the tasks:\n{task_stacks()}")
