"""Keyless fixtures: server contexts whose certificate's key is held by a test signer
(support.signers) instead of the context."""
import pytest

import fasttls
from support.signers import LocalSigner


@pytest.fixture
def keyless_ctx():
    """keyless_ctx(identity, signer=None, **newctx options) -> (context, signer)."""

    def make(identity, signer=None, **options):
        signer = signer if signer is not None else LocalSigner(identity.key_pem)
        ctx = fasttls.newctx(**options)
        ctx.set_keyless_cert(identity.chain_pem, signer)
        return ctx, signer

    return make
