"""IdentityCache: results found again by key, the newest kept, and each entry holding what its
key's ids are of."""
import gc
import weakref

from hardened_lightsail.identity_cache import IdentityCache


def test_a_result_is_made_once_per_key_and_the_oldest_goes_first():
    made = []
    cache: IdentityCache[str] = IdentityCache(2)

    def make(name):
        return lambda: made.append(name) or name.upper()

    assert cache.get("a", None, make("a")) == "A"
    assert cache.get("a", None, make("a")) == "A"
    assert made == ["a"]
    cache.get("b", None, make("b"))
    cache.get("c", None, make("c"))  # "a" goes
    assert cache.get("b", None, make("b")) == "B" and cache.get("a", None, make("a")) == "A"
    assert made == ["a", "b", "c", "a"]


class Members:
    """Stands for a big value (a tuple of networks); unlike a tuple it can be weakly referenced."""


def test_an_entry_keeps_the_objects_whose_ids_its_key_holds():
    cache: IdentityCache[str] = IdentityCache(1)
    members = Members()
    alive = weakref.ref(members)
    assert cache.get(id(members), members, lambda: "index") == "index"
    del members
    gc.collect()
    assert alive() is not None  # held by the entry: no other object can take its id meanwhile
    cache.get("another", None, lambda: "other")  # the entry goes, and its hold with it
    gc.collect()
    assert alive() is None
