"""Long lists of networks (blocklists of hundreds of thousands) held as integer keys
(networks.network_key) from the parse on: ordered, de-duplicated, printed and indexed without an
ipaddress object per member, which would cost more than all the rest of `fw render`."""
from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import overload

from .networks import V6_KEY, Network, NetworkIndex, key_network, key_texts, network_key


class NetworkList(Sequence[Network]):
    """An immutable sequence of networks, equal to the tuple of the same networks. Its members
    are made into ipaddress objects only when they are read one by one (a message naming an
    entry, a probe's hit); `keys`, `texts` and `network_index` serve everything done to all of them."""

    def __init__(self, keys: Iterable[int], canonical: bool = False):
        self.keys: tuple[int, ...] = tuple(keys)
        # Keys in order, each once (`canonical` lists): what an ipset holds, indexable as they are.
        self._canonical = canonical

    @classmethod
    def of(cls, networks: Iterable[Network]) -> NetworkList:
        """The networks as a NetworkList (itself when it is one)."""
        return networks if isinstance(networks, NetworkList) else cls(map(network_key, networks))

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Network: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Network, ...]: ...

    def __getitem__(self, index: int | slice) -> Network | tuple[Network, ...]:
        if isinstance(index, slice):
            return tuple(map(key_network, self.keys[index]))
        return key_network(self.keys[index])

    def __iter__(self) -> Iterator[Network]:
        return map(key_network, self.keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NetworkList):
            return self.keys == other.keys
        if isinstance(other, tuple):
            return len(other) == len(self.keys) and all(
                isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and network_key(network) == key
                for network, key in zip(other, self.keys, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return self._tuple_hash  # that of the equal tuple

    @cached_property
    def _tuple_hash(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        shown = ", ".join(self.texts[:3] if self._canonical else key_texts(self.keys[:3]))
        return f"NetworkList([{shown}{', ...' if len(self) > 3 else ''}], {len(self):,} networks)"

    @cached_property
    def families(self) -> tuple[NetworkList, NetworkList]:
        """(IPv4, IPv6) members, each sorted (ipaddress's order) and de-duplicated."""
        # Sorted before de-duplicated: a set's order would throw away the runs a list comes
        # with (published lists are mostly sorted), which timsort sorts in a fraction of the time.
        ordered = list(dict.fromkeys(sorted(self.keys)))
        split = bisect.bisect_left(ordered, V6_KEY)
        return NetworkList(ordered[:split], canonical=True), NetworkList(ordered[split:], canonical=True)

    @cached_property
    def texts(self) -> list[str]:
        """str() of every member, in order, written once per list (networks.key_texts)."""
        return key_texts(self.keys)

    @cached_property
    def network_index(self) -> NetworkIndex:
        """Which members contain or overlap a network (networks.NetworkIndex), built once per list."""
        return NetworkIndex(self.keys if self._canonical else list(dict.fromkeys(sorted(self.keys))))

    def positions(self, networks: Iterable[Network]) -> list[tuple[int, Network]]:
        """(position, member) of every entry that is one of `networks`, in list order."""
        wanted = {network_key(network) for network in networks}
        if not wanted:
            return []
        return [(position, key_network(key)) for position, key in enumerate(self.keys) if key in wanted]


def index_of(networks: Sequence[Network]) -> NetworkIndex:
    """The NetworkIndex of any sequence of networks; a NetworkList's is built once and shared
    (a policy's blocklist is asked about by the lock-out check and, as the rulesets' ipsets,
    by every probe of the analysis and the exposure table)."""
    return NetworkList.of(networks).network_index
