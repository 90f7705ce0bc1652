"""Cryptography for city cards: ciphers, ISO 9797-1 MACs, PBOC purse crypto, line protection.

Every function here is pinned by the published vectors of SPEC.md §4 (tests/test_crypto.py).
"""

from .cipher import (ALGS, Alg, block_size, cbc_decrypt, cbc_encrypt, check_key, ecb_decrypt,
                     ecb_encrypt, kcv, xor)
from .mac import iso9797_mac, mac_alg1, mac_alg3, pad, unpad2
from .pboc import (PurseCryptogram, diversify, diversify_once, load_cryptogram, load_mac1,
                   load_mac2, load_session_key, load_tac, purchase_cryptogram, purchase_mac1,
                   purchase_mac2, purchase_session_key, purchase_tac, purse_mac, tac_key,
                   unload_mac3)
from .secure import check_protected, decipher, encipher, line_mac, protect

__all__ = [name for name in dir() if not name.startswith("_")]
