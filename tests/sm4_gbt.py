"""An SM4 written from GB/T 32907-2016 for the tests only: an implementation independent of
``cryptography`` (OpenSSL) against which citycard's SM4 purse, MAC, diversification and
line-protection computations are checked (docs/sm4.md: no published SM4 purse vector exists,
so these are pinned by an independent computation).  Slow and plain on purpose; it shares no
code with citycard.  Checked itself against the standard's example (GB/T 32907 appendix A)."""

from __future__ import annotations

# GB/T 32907-2016 §6.2, the S-box
SBOX = bytes.fromhex(
    "d690e9fecce13db716b614c228fb2c05" "2b679a762abe04c3aa44132649860699"
    "9c4250f491ef987a33540b43edcfac62" "e4b31ca9c908e89580df94fa758f3fa6"
    "4707a7fcf37317ba83593c19e6854fa8" "686b81b27164da8bf8eb0f4b70569d35"
    "1e240e5e6358d1a225227c3b01217887" "d40046579fd327524c3602e7a0c4c89e"
    "eabf8ad240c738b5a3f7f2cef96115a1" "e0ae5da49b341a55ad933230f58cb1e3"
    "1df6e22e8266ca60c02923ab0d534e6f" "d5db3745defd8e2f03ff6a726d6c5b51"
    "8d1baf92bbddbc7f11d95c411f105ad8" "0ac13188a5cd7bbd2d74d012b8e5b4b0"
    "8969974a0c96777e65b9f109c56ec684" "18f07dec3adc4d2079ee5f3ed7cb3948")
FK = (0xA3B1BAC6, 0x56AA3350, 0x677D9197, 0xB27022DC)
# CK_i = (ck_i0, ck_i1, ck_i2, ck_i3) with ck_ij = (4i + j) * 7 mod 256 (§7.3)
CK = tuple(int.from_bytes(bytes(((4 * i + j) * 7) % 256 for j in range(4)), "big") for i in range(32))
MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & MASK


def _tau(x: int) -> int:
    return int.from_bytes(bytes(SBOX[b] for b in x.to_bytes(4, "big")), "big")


def _t(x: int) -> int:                     # round transformation: L(tau(x))
    b = _tau(x)
    return b ^ _rotl(b, 2) ^ _rotl(b, 10) ^ _rotl(b, 18) ^ _rotl(b, 24)


def _t_key(x: int) -> int:                 # key schedule: L'(tau(x))
    b = _tau(x)
    return b ^ _rotl(b, 13) ^ _rotl(b, 23)


def round_keys(key: bytes) -> list[int]:
    assert len(key) == 16
    k = [int.from_bytes(key[4 * i:4 * i + 4], "big") ^ FK[i] for i in range(4)]
    for i in range(32):
        k.append(k[i] ^ _t_key(k[i + 1] ^ k[i + 2] ^ k[i + 3] ^ CK[i]))
    return k[4:]


def _crypt(rk: list[int], block: bytes) -> bytes:
    x = [int.from_bytes(block[4 * i:4 * i + 4], "big") for i in range(4)]
    for i in range(32):
        x.append(x[i] ^ _t(x[i + 1] ^ x[i + 2] ^ x[i + 3] ^ rk[i]))
    return b"".join(v.to_bytes(4, "big") for v in (x[35], x[34], x[33], x[32]))


def encrypt_block(key: bytes, block: bytes) -> bytes:
    return _crypt(round_keys(key), block)


def decrypt_block(key: bytes, block: bytes) -> bytes:
    return _crypt(round_keys(key)[::-1], block)


def ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    assert len(data) % 16 == 0
    fn = decrypt_block if decrypt else encrypt_block
    return b"".join(fn(key, data[i:i + 16]) for i in range(0, len(data), 16))


def pad80(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 16)


def cbc_mac4(key: bytes, data: bytes, iv: bytes = bytes(16)) -> bytes:
    """CBC-MAC over ``data`` padded 80 00.. to 16 bytes, left 4 bytes."""
    h = iv
    padded = pad80(data)
    for i in range(0, len(padded), 16):
        h = encrypt_block(key, bytes(a ^ b for a, b in zip(h, padded[i:i + 16])))
    return h[:4]
