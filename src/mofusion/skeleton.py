"""Skeletons and forward kinematics.

A :class:`Skeleton` is a tree of named joints, each with a rest offset from its parent, plus BVH end
sites. Joints are stored in topological order (every parent before its children), which lets forward
kinematics run as one pass over the joints, vectorised over batch and time.

Forward kinematics follows BVH semantics: joint ``j``'s local rotation ``L_j`` turns the offsets of its
children, ``G_j = G_parent(j) @ L_j`` and ``p_c = p_j + G_j @ offset_c``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import MofusionError


@dataclass(frozen=True)
class EndSite:
    """A BVH ``End Site``: a leaf point fixed to ``parent`` at ``offset``."""

    parent: int
    offset: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Skeleton:
    """Joint names, parents, rest offsets and end sites.

    Args:
        names: joint names, unique.
        parents: parent index of each joint, ``-1`` for the root (joint 0); ``parents[j] < j``.
        offsets: ``(J, 3)`` rest translation of each joint relative to its parent, in the
            skeleton's length unit (the root's entry is its rest position, usually zero).
        end_sites: leaf points, kept so that BVH files round-trip.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray
    end_sites: tuple[EndSite, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "parents", tuple(int(p) for p in self.parents))
        offsets = np.asarray(self.offsets, dtype=np.float64).reshape(-1, 3)
        offsets.setflags(write=False)
        object.__setattr__(self, "offsets", offsets)
        if len(self.names) != len(self.parents) or len(self.names) != len(offsets):
            raise ValueError("names, parents and offsets must have one entry per joint")
        if not self.names:
            raise ValueError("a skeleton needs at least one joint")
        if len(set(self.names)) != len(self.names):
            raise ValueError("joint names must be unique")
        if self.parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(self.parents) if j > 0):
            raise ValueError("joints must be in topological order with a single root at index 0")

    # -- basic structure -----------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise MofusionError(f"the skeleton has no joint named {name!r}") from None

    def indices(self, names: Sequence[str]) -> list[int]:
        return [self.index(n) for n in names]

    def children(self, joint: int) -> list[int]:
        return [j for j, p in enumerate(self.parents) if p == joint]

    @property
    def bones(self) -> list[tuple[int, int]]:
        """``(parent, child)`` for every non-root joint."""
        return [(p, j) for j, p in enumerate(self.parents) if p >= 0]

    def bone_lengths(self) -> np.ndarray:
        """Rest length of the bone ending at each non-root joint, ``(J-1,)``."""
        return np.linalg.norm(self.offsets[1:], axis=-1)

    def same_topology(self, other: Skeleton) -> bool:
        return self.names == other.names and self.parents == other.parents

    def describe(self) -> str:
        return (
            f"{self.num_joints} joints ({', '.join(self.names[:4])}{', ...' if self.num_joints > 4 else ''})"
        )

    # -- left/right symmetry -------------------------------------------------------------------
    def mirror_map(self) -> list[int]:
        """Index of each joint's mirror image (itself for central joints), derived from names.

        Recognised name pairs: ``Left/Right``, ``left/right``, ``L/R`` and ``l/r`` as a prefix or
        suffix separated by ``_``, ``.``, ``-`` or a case change (``Hand_L``, ``LeftArm``, ``l_hip``).
        """
        lookup = {n: i for i, n in enumerate(self.names)}
        result = []
        for i, name in enumerate(self.names):
            mirrored = _mirror_name(name)
            result.append(lookup.get(mirrored, i) if mirrored is not None else i)
        for i, m in enumerate(result):  # a pair must point at each other
            if result[m] != i:
                result[i] = i
        return result

    def mirror_bone_pairs(self) -> list[tuple[int, int]]:
        """Pairs of joint indices ``(left_child, right_child)`` whose bones mirror each other."""
        mirror = self.mirror_map()
        pairs = []
        for j in range(1, self.num_joints):
            m = mirror[j]
            if m > j and mirror[self.parents[j]] == self.parents[m]:
                pairs.append((j, m))
        return pairs

    # -- transformations -----------------------------------------------------------------------
    def scaled(self, factor: float) -> Skeleton:
        sites = tuple(EndSite(s.parent, tuple(float(v) * factor for v in s.offset)) for s in self.end_sites)
        return Skeleton(self.names, self.parents, self.offsets * factor, sites)

    def with_offsets(self, offsets: np.ndarray) -> Skeleton:
        return Skeleton(self.names, self.parents, offsets, self.end_sites)

    def without_root(self) -> Skeleton:
        """The skeleton with joint 0 removed; its single child becomes the root."""
        kids = self.children(0)
        if len(kids) != 1 or kids[0] != 1:
            raise MofusionError("only a root with exactly one child (joint 1) can be removed")
        parents = tuple(p - 1 for p in self.parents[1:])
        parents = (-1,) + parents[1:]
        offsets = self.offsets[1:].copy()
        offsets[0] = self.offsets[0] + self.offsets[1]
        sites = tuple(EndSite(s.parent - 1, s.offset) for s in self.end_sites if s.parent > 0)
        return Skeleton(self.names[1:], parents, offsets, sites)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "parents": list(self.parents),
            "offsets": self.offsets.tolist(),
            "end_sites": [{"parent": s.parent, "offset": list(s.offset)} for s in self.end_sites],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Skeleton:
        sites = tuple(EndSite(int(s["parent"]), tuple(s["offset"])) for s in data.get("end_sites", []))
        return cls(tuple(data["names"]), tuple(data["parents"]), np.asarray(data["offsets"]), sites)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Skeleton):
            return NotImplemented
        return (
            self.same_topology(other)
            and np.array_equal(self.offsets, other.offsets)
            and self.end_sites == other.end_sites
        )

    def __hash__(self) -> int:
        return hash((self.names, self.parents))


_SIDE_PATTERNS = [
    (re.compile(r"Left"), "Left", "Right"),
    (re.compile(r"Right"), "Right", "Left"),
    (re.compile(r"left"), "left", "right"),
    (re.compile(r"right"), "right", "left"),
]
_SHORT_SIDE = re.compile(r"(^|[_.\-])([LlRr])($|[_.\-])|^([LlRr])(?=[A-Z])|(?<=[a-z])([LR])$")


def joint_side(name: str) -> str | None:
    """``"left"``, ``"right"`` or None (central), read from a joint name as the mirror map reads it."""
    low = name.lower()
    if "left" in low:
        return "left"
    if "right" in low:
        return "right"
    match = _SHORT_SIDE.search(name)
    if match is None:
        return None
    letter = next(match.group(i) for i in (2, 4, 5) if match.group(i))
    return "left" if letter in "Ll" else "right"


def _mirror_name(name: str) -> str | None:
    for pattern, old, new in _SIDE_PATTERNS:
        if pattern.search(name):
            return name.replace(old, new, 1)
    match = _SHORT_SIDE.search(name)
    if match is None:
        return None
    group = next(i for i in (2, 4, 5) if match.group(i))
    letter = match.group(group)
    swapped = {"L": "R", "R": "L", "l": "r", "r": "l"}[letter]
    start, end = match.span(group)
    return name[:start] + swapped + name[end:]


def forward_kinematics(
    skeleton: Skeleton | Sequence[int],
    rotations: Tensor,
    root_positions: Tensor,
    offsets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Global joint positions and rotations from local rotations (differentiable, batched).

    Args:
        skeleton: the skeleton, or just its parent list (then ``offsets`` is required).
        rotations: ``(..., J, 3, 3)`` local rotation matrices.
        root_positions: ``(..., 3)`` position of the root joint.
        offsets: ``(J, 3)`` or ``(..., J, 3)`` local translations (default: the skeleton's offsets).
            Per-frame translations model BVH files with position channels on non-root joints.

    Returns:
        ``positions (..., J, 3)`` and global rotations ``(..., J, 3, 3)``.
    """
    parents = skeleton.parents if isinstance(skeleton, Skeleton) else tuple(skeleton)
    if offsets is None:
        if not isinstance(skeleton, Skeleton):
            raise ValueError("offsets are required when only parents are given")
        offsets = torch.tensor(skeleton.offsets, dtype=rotations.dtype, device=rotations.device)
    if rotations.shape[-3] != len(parents):
        raise ValueError(f"rotations have {rotations.shape[-3]} joints, the skeleton {len(parents)}")
    global_rot: list[Tensor] = []
    positions: list[Tensor] = []
    for j, p in enumerate(parents):
        local = rotations[..., j, :, :]
        if p < 0:
            global_rot.append(local)
            positions.append(root_positions)
            continue
        offset = offsets[..., j, :]
        positions.append(positions[p] + (global_rot[p] @ offset.unsqueeze(-1)).squeeze(-1))
        global_rot.append(global_rot[p] @ local)
    return torch.stack(positions, dim=-2), torch.stack(global_rot, dim=-3)


def end_site_positions(skeleton: Skeleton, positions: Tensor, global_rotations: Tensor) -> Tensor:
    """``(..., S, 3)`` world positions of the skeleton's end sites."""
    if not skeleton.end_sites:
        return positions[..., :0, :]
    parents = [s.parent for s in skeleton.end_sites]
    offsets = torch.as_tensor(
        [s.offset for s in skeleton.end_sites], dtype=positions.dtype, device=positions.device
    )
    rot = global_rotations[..., parents, :, :]
    return positions[..., parents, :] + (rot @ offsets.unsqueeze(-1)).squeeze(-1)
