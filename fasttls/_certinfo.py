"""Decoding an X509 certificate into the dict the stdlib's getpeercert() returns (the same
keys and values as `_ssl._test_decode_cert`)."""
import ipaddress

from fasttls._binding import ffi, lib

__all__ = ["certificate_dict", "certificate_der"]

_SAN_KINDS = {lib.GEN_DNS: "DNS", lib.GEN_EMAIL: "email", lib.GEN_URI: "URI",
              lib.GEN_IPADD: "IP Address"}


def _take(ptr, length):
    try:
        return ffi.unpack(ffi.cast("char *", ptr), length)
    finally:
        lib.fasttls_free(ptr)


def _name(x509_name):
    """((("commonName", "x"),), ...): one tuple per RDN, as the stdlib shows it."""
    rdns = []
    field = ffi.new("char[]", 128)
    value = ffi.new("unsigned char **")
    rdn_set = ffi.new("int *")
    last_set = None
    for i in range(lib.X509_NAME_entry_count(x509_name)):
        n = lib.fasttls_name_entry(x509_name, i, rdn_set, field, 128, value)
        if n < 0:
            continue
        entry = (ffi.string(field).decode(), _take(value[0], n).decode("utf-8", "replace"))
        if rdn_set[0] == last_set:
            rdns[-1].append(entry)
        else:
            rdns.append([entry])
            last_set = rdn_set[0]
    return tuple(tuple(rdn) for rdn in rdns)


def _ip_text(raw):
    if len(raw) == 16:  # the stdlib writes IPv6 in full, upper case, without "::"
        return ":".join("%X" % int.from_bytes(raw[i : i + 2], "big") for i in range(0, 16, 2))
    return str(ipaddress.ip_address(raw)) if len(raw) == 4 else "<invalid>"


def _alt_names(x509):
    """subjectAltName entries as the stdlib's getpeercert() shows them, every kind included:
    ("DNS", ...), ("email", ...), ("URI", ...), ("IP Address", ...), ("Registered ID", oid),
    ("DirName", name tuple), and OpenSSL's printed form for the others, e.g.
    ("othername", "<unsupported>")."""
    names = []
    kind = ffi.new("int *")
    value = ffi.new("unsigned char **")
    i = 0
    while True:
        n = lib.fasttls_x509_san(x509, i, kind, value)
        if n < 0:
            return tuple(names)
        raw = _take(value[0], n) if value[0] != ffi.NULL else b""
        label = _SAN_KINDS.get(kind[0])
        if label == "IP Address":
            names.append((label, _ip_text(raw)))
        elif label is not None:
            names.append((label, raw.decode("utf-8", "replace")))
        elif kind[0] == lib.GEN_RID:
            names.append(("Registered ID", raw.decode("ascii", "replace") or "<INVALID>"))
        elif kind[0] == lib.GEN_DIRNAME:
            dirname = lib.fasttls_x509_san_dirname(x509, i)
            if dirname != ffi.NULL:
                try:
                    names.append(("DirName", _name(dirname)))
                finally:
                    lib.X509_NAME_free(dirname)
        else:
            kind_text, sep, rest = raw.decode("utf-8", "replace").partition(":")
            if sep:
                names.append((kind_text, rest))
        i += 1


def _uris(x509, which):
    """The URIs of one kind (lib.FASTTLS_URI_*), or None when the certificate has none."""
    found = []
    value = ffi.new("unsigned char **")
    while True:
        n = lib.fasttls_x509_uri(x509, which, len(found), value)
        if n == -2:
            return None
        if n < 0:
            return tuple(found)
        found.append(_take(value[0], n).decode("utf-8", "replace") if value[0] != ffi.NULL
                     else "")


def _time(x509, not_after):
    buf = ffi.new("char[]", 64)
    if lib.fasttls_x509_time(x509, not_after, buf, 64) < 0:
        return None
    return ffi.string(buf).decode()


def certificate_dict(x509):
    buf = ffi.new("char[]", 256)
    info = {
        "subject": _name(lib.X509_get_subject_name(x509)),
        "issuer": _name(lib.X509_get_issuer_name(x509)),
        "version": lib.X509_get_version(x509) + 1,
        "serialNumber": ffi.string(buf).decode() if lib.fasttls_x509_serial(x509, buf, 256) else "",
        "notBefore": _time(x509, 0),
        "notAfter": _time(x509, 1),
    }
    alt_names = _alt_names(x509)
    if alt_names:
        info["subjectAltName"] = alt_names
    # The fields the stdlib adds, under its names, when the certificate has them.
    for key, which in (("OCSP", lib.FASTTLS_URI_OCSP), ("caIssuers", lib.FASTTLS_URI_CA_ISSUERS),
                       ("crlDistributionPoints", lib.FASTTLS_URI_CRL)):
        uris = _uris(x509, which)
        if uris is not None:
            info[key] = uris
    return info


def certificate_der(x509):
    der = ffi.new("unsigned char **")
    n = lib.fasttls_x509_der(x509, der)
    if n <= 0:
        return b""
    return _take(der[0], n)
