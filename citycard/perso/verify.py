"""Verification of a personalized card against its CardSpec (DESIGN.md: runner and verification).

Per DF: SELECT and the FCI; every external-auth key and PIN authenticates; every EF
reads back what the plan wrote (zeros where it wrote nothing), its size is exact (a
read at the end answers 6B00) and its record count too (one more answers 6A83); a
write-protected file refuses a plain write (6900), and its line-protection key is proven by a
protected READ BINARY whose answer's MAC the host checks (SPEC §6 R14), or, where the file's
read key is another key, by a MAC'd write of the same data; the load key answers INITIALIZE
FOR LOAD with a MAC1 the host checks (and the purse's balance); DES keys answer INTERNAL
AUTHENTICATE.  Purchase, unload and TAC keys cannot be checked without a transaction and are
left out (said in the report).
Every check is non-destructive: writes put back the bytes already there.  The SELECTs whose
FCI is checked fetch it (T=0 GET RESPONSE); the others do not (docs/sim.md, "Card time model").

What this proves and what it cannot (docs/profile.md, "What verification proves"): every
file, record layout, size, access condition and key (by its use) of the profile is there and
right.  It cannot prove that the card holds *nothing else*: FMCOS has no directory or key
listing, a key can only be found by writing or trying it, and a DF's declared space is no
limit on a real card (SPEC §6 R9).  Extra files, DFs and keys are kept out by custody: perso
holds the card exclusively from the first APDU to the last and resets it on release
(tests/test_station_custody_pcsc.py).
"""

from __future__ import annotations

from ..commands import iso, purse, walk
from ..commands.fmcos import KeyType
from ..commands.iso import AuthMode
from ..commands.purse import PurseKind
from ..crypto import ecb_decrypt, ecb_encrypt, mac_alg1, mac_alg3, pboc
from ..crypto.cipher import Alg
from ..errors import CitycardError
from ..keys.handles import Key
from ..keytypes import is_psam_usage
from ..spec import CardSpec, DFSpec, FileSpec, data_room
from ..tlv import try_parse
from ..transport import CardSession, LineProtection
from .plan import Plan
from .steps import PersoError

Check = tuple[str, bool, str]

#: what a passed verification means, for the operator (printed after the count)
SCOPE = ("every file, record, access condition and key of the profile; an object the profile does not name "
         "cannot be seen by reading (FMCOS lists none): exclusive custody during perso keeps them out "
         "(docs/profile.md, \"What verification proves\")")


class _KeyRefused(Exception):
    """A key or PIN of the plan was refused (63Cx, 6983): verification stops there, so a wrong
    key set never spends one try of every other key on the card."""


def _refused(sw: int) -> bool:
    return sw & 0xFFF0 == 0x63C0 or sw == 0x6983


def verify_card(session: CardSession, spec: CardSpec, plan: Plan, *, raise_on_failure: bool = True) -> list[Check]:
    checks: list[Check] = []
    try:
        for df in spec.dfs():
            _verify_df(session, spec, plan, df, checks)
    except _KeyRefused:
        _add(checks, "verification stopped at the first refused key (no further key is tried)", False)
    failed = [c for c in checks if not c[1]]
    if failed and raise_on_failure:
        label, _ok, detail = failed[0]
        raise PersoError(f"verification failed: {label}: {detail}" +
                         (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
    return checks


def _add(checks: list[Check], label: str, ok: bool, detail: str = "") -> bool:
    checks.append((label, ok, detail))
    return ok


def _verify_df(session: CardSession, spec: CardSpec, plan: Plan, df: DFSpec, checks: list[Check]) -> None:
    n = df.name
    resp = walk.select_df(session, df)
    if not _add(checks, f"{n}: SELECT", resp.sw == 0x9000, f"SW {resp.sw:04X}"):
        return
    fci = try_parse(resp.data)
    name_ok = bool(fci) and fci[0].tag == 0x6F and (fci[0].find(0x84) is not None
                                                    and fci[0].find(0x84).value == df.aid)
    _add(checks, f"{n}: FCI names the DF", name_ok, resp.data.hex().upper())
    if df.fci_sfi is not None:
        expected = plan.contents.get((n, _fid_of_sfi(df, df.fci_sfi)))
        got = fci[0].find(0x9F0C).value if name_ok and fci[0].find(0x9F0C) is not None else None
        if expected is not None:
            _add(checks, f"{n}: FCI 9F0C carries EF{df.fci_sfi:02X}", got == expected,
                 (got or b"").hex().upper())
    # PINs first, then external-auth keys (the master last, so its security state stays)
    for k in (k for k in df.keys if k.ktype == KeyType.PIN):
        r = session.send(iso.verify(k.kid, plan.pins[f"{n}/{k.name}"]))
        _add(checks, f"{n}: PIN {k.name} verifies", r.sw == 0x9000, f"SW {r.sw:04X}")
        if _refused(r.sw):
            raise _KeyRefused
    for k in sorted((k for k in df.keys if k.ktype == KeyType.EXTERNAL_AUTH), key=lambda k: k.kid == 0):
        r = walk.external_authenticate(session, k.kid, plan.keys[f"{n}/{k.name}"], spec.line_alg)
        _add(checks, f"{n}: key {k.name} authenticates", r.sw == 0x9000, f"SW {r.sw:04X}")
        if _refused(r.sw):
            raise _KeyRefused
    line_keys = {k.kid: plan.keys[f"{n}/{k.name}"] for k in df.keys if k.ktype == KeyType.LINE_PROTECTION}
    line_checked: set[int] = set()
    load_purse = _load_purse(plan, df)
    for f in df.files:
        if f.kind in ("ed", "ep"):
            if f is not load_purse:      # else its balance comes with INITIALIZE FOR LOAD (_verify_keys)
                _check_balance(session, n, f, checks)
            continue
        if f.read_protect:
            _add(checks, f"{n}: {f.name} is read-protected (content not read back)", True)
        elif f.kind == "binary":
            proof = _read_proof(f, line_keys, line_checked, spec.line_alg)
            if _verify_binary(session, plan, df, f, checks, proof):
                line_checked.add(f.write_key)
        else:
            _verify_records(session, plan, df, f, checks)
        if f.write_protect != "plain" and f.kind == "binary" and not f.read_protect:
            content = plan.contents.get((n, f.fid), bytes(f.size))[:min(f.size, 0xF0)]
            cmd = iso.update_binary(content, 0, sfi=f.sfi)
            # the protection proof: a plain write of the file's first byte (the byte already there)
            # answers 6900, "CLA does not match the file's line protection" (SPEC §1.5), whatever
            # its length
            r = session.send(iso.update_binary(content[:1], 0, sfi=f.sfi))
            _add(checks, f"{n}: {f.name} refuses a plain write", r.sw == 0x6900, f"SW {r.sw:04X}")
            key = line_keys.get(f.write_key)
            # the key proof by writing the same data back: only where no protected read proved
            # it (a file whose read key is another key than its write key)
            if key is not None and f.write_key not in line_checked:
                r = session.send(cmd, protect=LineProtection(key, encrypt=f.write_protect == "cipher",
                                                             alg=spec.line_alg))
                ok = _add(checks, f"{n}: line-protection key {f.write_key:02X} writes {f.name}", r.sw == 0x9000,
                          f"SW {r.sw:04X}")
                if ok:
                    line_checked.add(f.write_key)
                elif r.sw in (0x9302, 0x6988):      # a wrong line-protection key: its counter ran down once
                    raise _KeyRefused
    _verify_keys(session, plan, df, checks)


def _load_purse(plan: Plan, df: DFSpec) -> FileSpec | None:
    """The purse whose load key :func:`_verify_keys` proves (INITIALIZE FOR LOAD, which also
    answers its balance), or None."""
    purses = [f for f in df.files if f.kind in ("ed", "ep")]
    if purses and any(k.ktype == KeyType.LOAD and f"{df.name}/{k.name}" in plan.keys for k in df.keys):
        return purses[0]
    return None


def _check_balance(session: CardSession, n: str, f: FileSpec, checks: list[Check]) -> None:
    r = session.send(purse.get_balance(PurseKind.ED if f.kind == "ed" else PurseKind.EP))
    _add(checks, f"{n}: {f.kind.upper()} balance is zero", r.sw == 0x9000 and r.data == bytes(4),
         f"{r.data.hex().upper()} SW {r.sw:04X}")


def _fid_of_sfi(df: DFSpec, sfi: int) -> int:
    for f in df.files:
        if f.sfi == sfi and f.kind not in ("ed", "ep"):
            return f.fid
    return -1


def _read_proof(f: FileSpec, line_keys: dict[int, Key], line_checked: set[int],
                alg: Alg = "des") -> LineProtection | None:
    """The line protection under which to read ``f`` as the proof of its write key, or None.

    A protected READ BINARY (``04 B0 .. 04 MAC Le``) answers data ‖ MAC under the file's
    *read* line-protection key (SPEC §6 R14; UM §11, 7.5; the simulator's ``files.py``
    ``_read_guard``), so it proves the write key only where the two are the same key; an
    enciphered file answers E(LD ‖ data ‖ pad) ‖ MAC (R14).  Once per key and DF: a key
    already proven is not proven again."""
    if f.kind != "binary" or f.write_protect == "plain" or f.read_protect or f.read_key != f.write_key:
        return None
    key = line_keys.get(f.write_key)
    if key is None or f.write_key in line_checked:
        return None
    return LineProtection(key, encrypt=f.write_protect == "cipher", alg=alg)


#: the longest protected read: its answer (ciphertext of LD ‖ data ‖ pad, and the MAC) stays
#: within the 239 bytes of an FM1208 data field (SPEC §6 R7)
_PROTECTED_READ_MAX = 0xE0


def _protected_read_max(proof: LineProtection) -> int:
    """:data:`_PROTECTED_READ_MAX`, less for an enciphered file whose ciphertext with the MAC
    would not fit (SM4 pads to 16 bytes: 222 bytes, docs/sm4.md decision 13)."""
    return min(_PROTECTED_READ_MAX, data_room("cipher", proof.alg)) if proof.encrypt else _PROTECTED_READ_MAX


def _verify_binary(session: CardSession, plan: Plan, df: DFSpec, f: FileSpec, checks: list[Check],
                   proof: LineProtection | None = None) -> bool:
    """Content and size of a binary file; with ``proof``, the first chunk is read under line
    protection and its answer's MAC checked (the proof of the file's line-protection key).
    Returns whether that key was proven."""
    n = df.name
    expected = plan.contents.get((n, f.fid), bytes(f.size))
    proven = False
    if proof is None:
        read = walk.read_file(session, f)
    else:
        read, proven = _protected_read(session, df, f, proof, checks)
        if read is None:
            return False
    if not read.ok:
        _add(checks, f"{n}: {f.name} reads back", False, f"SW {read.sw:04X} at offset {read.offset}")
        return proven
    got = read.data
    _add(checks, f"{n}: {f.name} reads back what was written", got == expected,
         "" if got == expected else f"differs at byte {_first_diff(got, expected)}")
    r = session.send(iso.read_binary(f.size, 1))
    _add(checks, f"{n}: {f.name} is {f.size} bytes", r.sw == 0x6B00, f"read at {f.size}: SW {r.sw:04X}")
    return proven


def _protected_read(session: CardSession, df: DFSpec, f: FileSpec, proof: LineProtection,
                    checks: list[Check]) -> tuple[walk.BinaryRead | None, bool]:
    """READ BINARY of ``f``'s first chunk under line protection (SPEC §6 R14): the card answers
    data ‖ MAC (enciphered files: E(LD ‖ data ‖ pad) ‖ MAC) under the read key with the
    challenge as IV; the MAC is checked here.  The rest of a long file is read plainly.
    (the read, or None when the key was refused; whether the key was proven)."""
    n, kid = df.name, f"{f.write_key:02X}"
    first = min(f.size, _protected_read_max(proof))
    r = session.send(iso.read_binary(0, first, sfi=f.sfi), protect=proof)
    if r.sw in (0x9302, 0x6988):         # a wrong line-protection key: its counter ran down once
        _add(checks, f"{n}: line-protection key {kid} reads {f.name} under MAC", False, f"SW {r.sw:04X}")
        raise _KeyRefused
    if r.sw != 0x9000:
        return walk.BinaryRead(b"", r.sw, 0), False
    body, mac = r.data[:-4], r.data[-4:]
    from ..crypto.secure import decipher, line_mac

    challenge = session.line_challenge or b""
    mac_ok = len(r.data) >= 4 and line_mac(proof.key, challenge, body, proof.alg) == mac
    _add(checks, f"{n}: line-protection key {kid} MACs the read of {f.name}", mac_ok,
         "" if mac_ok else "the answer's MAC differs")
    data = body
    if proof.encrypt and mac_ok:
        try:
            data = decipher(proof.key, body, proof.alg)
        except CitycardError as exc:
            _add(checks, f"{n}: {f.name} deciphers under line-protection key {kid}", False, str(exc))
            return None, False
    if len(data) < first:
        return walk.BinaryRead(data, 0x9000, len(data)), mac_ok
    rest = walk.read_binary_to_end(session, f.size, start=first)   # the current EF, plainly
    return walk.BinaryRead(data + rest.data, rest.sw, rest.offset), mac_ok


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _verify_records(session: CardSession, plan: Plan, df: DFSpec, f: FileSpec, checks: list[Check]) -> None:
    n = df.name
    expected: list[bytes] = plan.contents.get((n, f.fid), [])
    if f.kind == "cyclic":
        expected = list(reversed(expected))      # record 1 is the newest
    for i, rec in enumerate(expected, 1):
        r = session.send(iso.read_record(i, sfi=f.sfi, ne=len(rec)))
        if not _add(checks, f"{n}: {f.name} record {i}", r.sw == 0x9000 and r.data == rec,
                    f"SW {r.sw:04X}"):
            return
    if f.kind != "cyclic" or len(expected) < f.nrec:
        r = session.send(iso.read_record(len(expected) + 1, sfi=f.sfi))
        _add(checks, f"{n}: {f.name} holds {len(expected)} record(s)", r.sw == 0x6A83, f"SW {r.sw:04X}")


def _verify_keys(session: CardSession, plan: Plan, df: DFSpec, checks: list[Check]) -> None:
    n = df.name
    purses = [f for f in df.files if f.kind in ("ed", "ep")]
    for k in df.keys:
        key = plan.keys.get(f"{n}/{k.name}")
        if key is None:
            continue
        if k.ktype == KeyType.LOAD and purses:
            p2 = PurseKind.ED if purses[0].kind == "ed" else PurseKind.EP
            terminal = b"\x00\x00\x00\x00\x00\x01"
            r = session.send(purse.initialize_for_load(p2, k.kid, 1, terminal))
            ok = r.sw == 0x9000 and len(r.data) == 16
            if ok:
                init = purse.LoadInit.parse(r.data)
                ses = pboc.load_session_key(key, init.random, init.online_counter, k.alg)   # docs/sm4.md
                ok = pboc.load_mac1(ses, init.balance, 1, 0x01 if p2 == PurseKind.ED else 0x02, terminal,
                                    alg=k.alg) == init.mac1
            _add(checks, f"{n}: load key {k.name} gives the expected MAC1", ok, f"SW {r.sw:04X}")
            # the purse's balance: the first field of the answer, under MAC1 (SPEC §2.1, §2.2),
            # instead of a GET BALANCE; without a good answer, GET BALANCE
            if ok:
                _add(checks, f"{n}: {purses[0].kind.upper()} balance is zero", init.balance == 0,
                     f"{r.data[:4].hex().upper()} (INITIALIZE FOR LOAD)")
            else:
                _check_balance(session, n, purses[0], checks)
        elif k.ktype in (KeyType.DES_ENCRYPT, KeyType.DES_DECRYPT, KeyType.DES_MAC):
            data = bytes(range(1, 9))
            mode = AuthMode(k.ktype - KeyType.DES_ENCRYPT)
            r = session.send(iso.internal_authenticate(mode, k.kid, data))
            if mode == AuthMode.MAC:
                want = (mac_alg1(key, data) if len(key) == 8 else mac_alg3(key, data))[:4]
            elif mode == AuthMode.ENCRYPT:
                want = ecb_encrypt(key, data)
            else:
                want = ecb_decrypt(key, data)
            _add(checks, f"{n}: key {k.name} answers INTERNAL AUTHENTICATE", r.sw == 0x9000 and r.data == want,
                 f"SW {r.sw:04X}")
        elif is_psam_usage(k.ktype):   # a PSAM master (docs/psam.md): proved by a purchase, which spends a TTSN
            _add(checks, f"{n}: PSAM key {k.name} ({k.ktype:02X}/{k.kid:02X}) written (checked by a transaction, "
                 "docs/psam.md)", True)
        elif k.ktype in (KeyType.TAC, KeyType.OVERDRAW, KeyType.UNLOAD, KeyType.PURCHASE, KeyType.PIN_UNBLOCK,
                         KeyType.PIN_RELOAD):
            _add(checks, f"{n}: key {k.name} ({k.ktype:02X}) written (not checkable without a transaction)", True)


def probe_files(session: CardSession, spec: CardSpec) -> list[Check]:
    """An optional, partial look for files the profile does not name (``perso --probe``):
    in every DF of the profile, READ BINARY of one byte by each SFI 1–30 that no profile file
    uses; anything but ``6A82`` (file not found) is a file there (``6981`` a record file,
    ``6982`` a protected one).  Reads only, no key: safe on a real card.  It sees EFs only, and
    only those whose FID's low five bits are an SFI 1–30 (the simulator's rule, and what real
    issuances rely on: EF0015 read as SFI 15, EF0006 as SFI 06, SPEC §2.5, §3); extra DFs and keys stay unseen (docs/profile.md, "What verification proves")."""
    checks: list[Check] = []
    for df in spec.dfs():
        if walk.select_unfetched(session, walk.select_df_command(df)) != 0x9000:   # its FCI is not used
            _add(checks, f"{df.name}: probe for unknown files", False, "SELECT refused")
            continue
        known = {f.fid & 0x1F for f in df.files} | {f.sfi for f in df.files if f.sfi is not None}
        found = []
        for sfi in range(1, 31):
            if sfi in known:
                continue
            sw = session.send(iso.read_binary(0, 1, sfi=sfi)).sw
            if sw != 0x6A82:
                found.append(f"SFI {sfi:02X} answers {sw:04X}")
        _add(checks, f"{df.name}: no file beyond the profile's at SFI 1-30 (probe)", not found, ", ".join(found))
    return checks
