"""moto's server, corrected where its answers differ from AWS's in what
ihp-infra reads. The SDK for Rust checks an answer's XML root strictly;
botocore, which moto is built on, never looks at it.

- GetBucketVersioning: AWS answers <VersioningConfiguration>; moto 5.2.5
  wraps the status in <GetBucketVersioningResponse> (its serializer follows
  botocore's model, which doesn't name the root).
- SES v2 CreateEmailIdentity of a domain without DkimSigningAttributes: AWS
  sets up Easy DKIM (signing on, status PENDING, three tokens for the CNAME
  records); moto 5.2.5 leaves DKIM off, with no tokens.

Each fix is pinned to the moto version localstack/moto.sh installs; a newer
moto must be checked again before this file follows it.
"""

import secrets
import sys

import moto
from moto.core import serialize
from moto.ses import models as ses_models
from moto.server import main

EXPECTED_MOTO = "5.2.5"

ROOTS = {
    # operation: (moto's root, AWS's root)
    "GetBucketVersioning": ("GetBucketVersioningResponse", "VersioningConfiguration"),
}


def _with_aws_roots(original):
    def serialized(self, resp, result, shape, serialized_result):
        resp = original(self, resp, result, shape, serialized_result)
        roots = ROOTS.get(self.operation_model.name)
        body = resp.get("body")
        if roots and isinstance(body, str):
            moto_root, aws_root = roots
            body = body.replace(f"<{moto_root}", f"<{aws_root}", 1)
            body = body.replace(f"</{moto_root}>", f"</{aws_root}>", 1)
            resp["body"] = body
        return resp

    return serialized


def _with_easy_dkim(original):
    def init(self, email_identity, tags, dkim_signing_attributes, configuration_set_name):
        original(self, email_identity, tags, dkim_signing_attributes, configuration_set_name)
        if self.identity_type == "DOMAIN" and not dkim_signing_attributes:
            self.dkim_attributes = {
                "SigningEnabled": True,
                "Status": "PENDING",
                "Tokens": [secrets.token_hex(16) for _ in range(3)],
                "SigningAttributesOrigin": "AWS_SES",
                "NextSigningKeyLength": "RSA_2048_BIT",
                "CurrentSigningKeyLength": "RSA_2048_BIT",
            }

    return init


if __name__ == "__main__":
    if moto.__version__ != EXPECTED_MOTO:
        sys.exit(f"moto_as_aws.py fixes moto {EXPECTED_MOTO}, not {moto.__version__}")
    serialize.S3Serializer._serialized_result_to_response = _with_aws_roots(
        serialize.S3Serializer._serialized_result_to_response
    )
    ses_models.EmailIdentity.__init__ = _with_easy_dkim(ses_models.EmailIdentity.__init__)
    sys.exit(main())
