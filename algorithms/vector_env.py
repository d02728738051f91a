"""A Tianshou vector environment whose copies are rows of one array-stepped environment.

Tianshou's ``BaseVectorEnv.__init__`` builds one worker per environment copy;
our environments step every copy with one array operation, so this base class
sets up the same bookkeeping without workers. Subclasses implement ``reset``,
``step``, ``seed`` and the ``env_attribute`` hook.
"""

from __future__ import annotations

from typing import Any

from tianshou.env import BaseVectorEnv


class ArrayVectorEnv(BaseVectorEnv):
    def __init__(self, env_num: int):  # deliberately not BaseVectorEnv.__init__ (no workers)
        self.env_num = env_num
        self.workers = []
        self.wait_num = env_num
        self.timeout = None
        self.is_async = False
        self.waiting_conn = []
        self.waiting_id = []
        self.ready_id = list(range(env_num))
        self.is_closed = False

    def env_attribute(self, key: str) -> Any:
        """The value of a gym attribute (``action_space``, ``observation_space``, ...), the same for every copy."""
        raise NotImplementedError

    def get_env_attr(self, key: str, id=None) -> list[Any]:
        value = self.env_attribute(key)
        return [value for _ in self._wrap_id(id)]

    def render(self, **kwargs: Any) -> list[Any]:
        return []

    def close(self) -> None:
        self.is_closed = True
