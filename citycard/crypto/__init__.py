"""Cryptography for city cards: ciphers, ISO 9797-1 MACs, PBOC purse crypto, line protection.

Every function here is pinned by the published vectors of SPEC.md §4 (tests/test_crypto.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

# The names of the submodules, imported when first used (PEP 562): a command that only
# enciphers (``citycard calc des``) does not pay for the purse, MAC and line-protection
# modules and what they import (issue 19 item 3, CLI start-up).
_WHERE = {
    "cipher": ("ALGS", "Alg", "block_size", "cbc_decrypt", "cbc_encrypt", "check_key", "ecb_decrypt",
               "ecb_encrypt", "kcv", "xor"),
    "mac": ("iso9797_mac", "mac_alg1", "mac_alg3", "pad", "unpad2"),
    "pboc": ("ALG_ID_SM4", "PurseCryptogram", "alg_of_id", "diversify", "diversify_once", "load_cryptogram", "load_mac1",
             "load_mac2", "load_session_key", "load_tac", "purchase_cryptogram", "purchase_mac1",
             "purchase_mac2", "purchase_session_key", "purchase_tac", "purse_mac", "tac_key",
             "unload_mac3"),
    "secure": ("auth_cryptogram", "check_protected", "decipher", "encipher", "line_mac", "pin_reload_mac",
               "protect"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

if TYPE_CHECKING:
    from .cipher import (ALGS, Alg, block_size, cbc_decrypt, cbc_encrypt, check_key, ecb_decrypt,
                         ecb_encrypt, kcv, xor)
    from .mac import iso9797_mac, mac_alg1, mac_alg3, pad, unpad2
    from .pboc import (ALG_ID_SM4, PurseCryptogram, alg_of_id, diversify, diversify_once, load_cryptogram, load_mac1,
                       load_mac2, load_session_key, load_tac, purchase_cryptogram, purchase_mac1,
                       purchase_mac2, purchase_session_key, purchase_tac, purse_mac, tac_key,
                       unload_mac3)
    from .secure import (auth_cryptogram, check_protected, decipher, encipher, line_mac, pin_reload_mac,
                         protect)

__all__ = sorted(_MODULE_OF)


__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
