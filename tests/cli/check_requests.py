"""Checks every request ihp-infra sent against what real AWS accepts.

The emulators take requests AWS rejects (names too long, characters a
service refuses, too many tags), so the integration tests ask this script
after each test: every recorded request the binary sent (its User-Agent
carries `app/ihp-infra`) is parsed with LocalStack's request parser and
checked against

- botocore's published service models (the pinned LocalStack venv's copy,
  unpatched): required members, enums, lengths, patterns, ranges, list
  sizes;
- the naming rules AWS documents outside the models (`RULES` below, each
  citing its page).

Protocol: one path per line on stdin, a recording in moto's JSON-lines
shape (method, url, headers, body, body_encoded); one JSON line back per
path: how many of ihp-infra's requests were checked, and the violations
("service Operation Param: rule"). Values of sensitive members
(passwords, secrets) are never quoted.

Run by tests/cli/requests.rs with the LocalStack venv's Python (it has
botocore, LocalStack's parser and the `regex` module, which knows \\p{L}).
"""

import base64
import ipaddress
import json
import sys
from urllib.parse import urlsplit

import botocore.session
import regex
from localstack.aws.protocol.parser import create_parser
from localstack.http import Request

# The signature scope's service name -> botocore's.
SERVICES = {"tagging": "resourcegroupstaggingapi", "monitoring": "cloudwatch"}
SESSION = botocore.session.get_session()
PARSERS = {}


def parser(service):
    if service not in PARSERS:
        model = SESSION.get_service_model(SERVICES.get(service, service))
        PARSERS[service] = create_parser(model)
    return PARSERS[service]


def header(headers, name):
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def sent_by_ihp_infra(headers):
    agent = header(headers, "user-agent") + " " + header(headers, "x-amz-user-agent")
    return "app/ihp-infra" in agent


# --- the models ---------------------------------------------------------

PATTERNS = {}


def pattern(text):
    if text not in PATTERNS:
        PATTERNS[text] = regex.compile(text)
    return PATTERNS[text]


def shown(shape, value):
    if shape.metadata.get("sensitive"):
        return "(sensitive)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_shape(shape, value, path, out):
    """Appends (path, rule) for every way `value` breaks `shape`."""
    if value is None:
        return
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        for name in meta.get("required", []):
            if value.get(name) is None:
                out.append((f"{path}.{name}".lstrip("."), "required, missing"))
        for name, member in shape.members.items():
            if name in value:
                check_shape(member, value[name], f"{path}.{name}".lstrip("."), out)
    elif kind in ("list", "map"):
        size = len(value)
        if "min" in meta and size < meta["min"]:
            out.append((path, f"at least {meta['min']} items, has {size}"))
        if "max" in meta and size > meta["max"]:
            out.append((path, f"at most {meta['max']} items, has {size}"))
        if kind == "list":
            for i, item in enumerate(value):
                check_shape(shape.member, item, f"{path}[{i}]", out)
        else:
            for key, item in value.items():
                check_shape(shape.key, key, f"{path} key", out)
                check_shape(shape.value, item, f"{path}[{key!r}]", out)
    elif kind == "string":
        if shape.enum and value not in shape.enum:
            out.append((path, f"one of {shape.enum}, is {shown(shape, value)}"))
        if "min" in meta and len(value) < meta["min"]:
            out.append((path, f"at least {meta['min']} characters, has {len(value)}"))
        if "max" in meta and len(value) > meta["max"]:
            out.append((path, f"at most {meta['max']} characters, has {len(value)}"))
        # Smithy patterns are not anchored: a search, as AWS does.
        if "pattern" in meta and not pattern(meta["pattern"]).search(value):
            out.append((path, f"pattern {meta['pattern']}, is {shown(shape, value)}"))
    elif kind in ("integer", "long"):
        if "min" in meta and value < meta["min"]:
            out.append((path, f"at least {meta['min']}, is {value}"))
        if "max" in meta and value > meta["max"]:
            out.append((path, f"at most {meta['max']}, is {value}"))


# --- the naming rules the models don't carry ------------------------------


def rds_identifier(most):
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html
    # (DBInstanceIdentifier) and API_DeleteDBInstance.html
    # (FinalDBSnapshotIdentifier): 1 to 63 (snapshots: 255) letters, digits
    # or hyphens; first a letter; no two hyphens in a row; no hyphen last.
    def rule(value):
        if not 1 <= len(value) <= most:
            return f"1 to {most} characters"
        if not regex.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", value):
            return "letters, digits and hyphens, starting with a letter"
        if "--" in value or value.endswith("-"):
            return "no two hyphens in a row, no hyphen at the end"
        return None

    return rule


def db_subnet_group_name(value):
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBSubnetGroup.html
    if len(value) > 255 or not regex.fullmatch(r"[A-Za-z0-9._ -]+", value):
        return "up to 255 letters, digits, periods, underscores, spaces or hyphens"
    if value.lower() == "default":
        return "must not be default"
    return None


def master_username(value):
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html
    # (MasterUsername): 1 to 16 letters, digits or underscores, a letter first.
    if not regex.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,15}", value):
        return "1 to 16 letters, digits or underscores, starting with a letter"
    return None


def master_password(value):
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html
    # (MasterUserPassword, RDS for PostgreSQL): 8 to 128 printable ASCII
    # characters but '/', '"', '@' and space.
    if not 8 <= len(value) <= 128:
        return "8 to 128 characters"
    if any(not 33 <= ord(c) <= 126 or c in '/"@' for c in value):
        return "printable ASCII but '/', '\"', '@' and space"
    return None


def bucket_name(value):
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
    if not regex.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
        return "3 to 63 lower-case letters, digits, dots and hyphens, a letter or digit at each end"
    if ".." in value:
        return "no two periods in a row"
    try:
        ipaddress.IPv4Address(value)
        return "not an IP address"
    except ValueError:
        pass
    if value.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        return "no reserved prefix (xn--, sthree-, amzn-s3-demo-)"
    if value.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")):
        return "no reserved suffix (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)"
    return None


# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html:
# in a VPC, names and descriptions are up to 255 of a-z, A-Z, 0-9, spaces
# and ._-:/()#,@[]+=&;{}!$*; a name does not start with sg-. Rule
# descriptions (IpRange, UserIdGroupPair) take the same characters.
EC2_TEXT = regex.compile(r"[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*")


def security_group_text(value):
    if len(value) > 255 or not EC2_TEXT.fullmatch(value):
        return "up to 255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*"
    return None


def security_group_name(value):
    if value.lower().startswith("sg-"):
        return "must not start with sg-"
    return security_group_text(value)


def client_token(value):
    # https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
    if not 1 <= len(value) <= 64 or not value.isascii():
        return "1 to 64 ASCII characters"
    return None


# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html
RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
                  1096, 1827, 2192, 2557, 2922, 3288, 3653}


def retention(value):
    if value not in RETENTION_DAYS:
        return f"one of {sorted(RETENTION_DAYS)}"
    return None


def managed_policy(value):
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html:
    # a managed policy is at most 6,144 characters, whitespace not counted.
    if len("".join(value.split())) > 6144:
        return "at most 6,144 characters without whitespace"
    return None


def trust_policy(value):
    # Same page: a role's trust policy is at most 2,048 characters (the
    # default quota), whitespace not counted.
    if len("".join(value.split())) > 2048:
        return "at most 2,048 characters without whitespace"
    return None


# (service, operation or None for every one, parameter) -> rule.
RULES = {
    ("rds", None, "DBInstanceIdentifier"): rds_identifier(63),
    ("rds", None, "NewDBInstanceIdentifier"): rds_identifier(63),
    ("rds", None, "FinalDBSnapshotIdentifier"): rds_identifier(255),
    ("rds", None, "DBSnapshotIdentifier"): rds_identifier(255),
    ("rds", None, "DBSubnetGroupName"): db_subnet_group_name,
    ("rds", None, "MasterUsername"): master_username,
    ("rds", None, "MasterUserPassword"): master_password,
    ("s3", None, "Bucket"): bucket_name,
    ("ec2", "CreateSecurityGroup", "GroupName"): security_group_name,
    ("ec2", "CreateSecurityGroup", "Description"): security_group_text,
    ("ec2", None, "ClientToken"): client_token,
    ("logs", None, "retentionInDays"): retention,
    ("iam", None, "PolicyDocument"): managed_policy,
    ("iam", None, "AssumeRolePolicyDocument"): trust_policy,
}

# Descriptions of security group rules, wherever they sit.
RULE_DESCRIPTIONS = regex.compile(
    r"IpPermissions\[\d+\]\.(IpRanges|Ipv6Ranges|UserIdGroupPairs|PrefixListIds)\[\d+\]\.Description"
)


def rule_for(service, operation, path, name):
    if service == "ec2" and RULE_DESCRIPTIONS.fullmatch(path):
        return security_group_text
    if "." in path or "[" in path:
        return None  # the rules above are about top-level parameters
    return RULES.get((service, operation, name)) or RULES.get((service, None, name))


# https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html
# ("Tag naming limits and requirements"): at most 50 tags per resource, keys
# 1 to 128 and values up to 256 Unicode characters, no `aws:` prefix, and
# (every service but EC2) only letters, digits, spaces and _ . : / = + - @.
# EC2 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html)
# takes any characters, keys up to 127 and values up to 255.
TAG_TEXT = regex.compile(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*")


def tag_sets(params, path=""):
    """Every tag set in a request's parameters, as (path, {key: value})."""
    if isinstance(params, dict):
        for name, value in params.items():
            here = f"{path}.{name}".lstrip(".")
            if name in ("Tags", "TagSet", "tags") and isinstance(value, list):
                if all(isinstance(t, dict) and "Key" in t for t in value):
                    yield here, [(t["Key"], t.get("Value") or "") for t in value]
                    continue
            if name == "tags" and isinstance(value, dict):
                yield here, list(value.items())
                continue
            yield from tag_sets(value, here)
    elif isinstance(params, list):
        for i, item in enumerate(params):
            yield from tag_sets(item, f"{path}[{i}]")


def check_tags(service, path, tags, out):
    key_max, value_max = (127, 255) if service == "ec2" else (128, 256)
    if len(tags) > 50:
        out.append((path, f"at most 50 tags per resource, has {len(tags)}"))
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        out.append((path, "each tag key once"))
    for key, value in tags:
        if not 1 <= len(key) <= key_max:
            out.append((f"{path} {key!r}", f"tag keys are 1 to {key_max} characters"))
        if len(value) > value_max:
            out.append((f"{path} {key!r}", f"tag values are up to {value_max} characters"))
        if key.lower().startswith("aws:"):
            out.append((f"{path} {key!r}", "tag keys must not start with aws:"))
        if service != "ec2":
            for text in (key, value):
                if not TAG_TEXT.fullmatch(text):
                    out.append(
                        (f"{path} {key!r}",
                         "only letters, digits, spaces and _ . : / = + - @ in tags")
                    )
                    break


def check_rules(service, operation, params, out):
    for path, name, value in leaves(params):
        rule = rule_for(service, operation, path, name)
        if rule and value is not None:
            broken = rule(value)
            if broken:
                secret = "Password" in name or "Secret" in name
                out.append((path, f"{broken}, is {'(sensitive)' if secret else repr(value)}"))


def leaves(params, path=""):
    """Every (path, member name, value) in a request's parameters."""
    if isinstance(params, dict):
        for name, value in params.items():
            here = f"{path}.{name}".lstrip(".")
            yield here, name, value
            yield from leaves(value, here)
    elif isinstance(params, list):
        for i, item in enumerate(params):
            yield from leaves(item, f"{path}[{i}]")


# --- one recording ------------------------------------------------------


def check_request(entry):
    headers = entry.get("headers") or {}
    if not sent_by_ihp_infra(headers):
        return None
    body = entry.get("body") or ""
    body = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
    auth = header(headers, "authorization")
    # Credential=AKID/20261202/eu-west-1/ec2/aws4_request
    scope = auth.split("Credential=")[1].split(",")[0].split("/") if "Credential=" in auth else []
    service = scope[3] if len(scope) > 3 else "?"
    url = urlsplit(entry["url"])
    # SES's two APIs sign as "ses"; v2 is the REST one under /v2/.
    if service == "ses" and url.path.startswith("/v2/"):
        service = "sesv2"
    request = Request(
        method=entry["method"], path=url.path, query_string=url.query,
        headers=headers, body=body,
    )
    try:
        operation, params = parser(service).parse(request)
    except Exception as error:  # an unparseable request is a finding too
        return [f"{service} {entry['method']} {url.path}: not a request AWS's model knows ({error})"]
    found = []
    check_shape(operation.input_shape, params, "", found)
    check_rules(service, operation.name, params, found)
    for path, tags in tag_sets(params):
        check_tags(service, path, tags, found)
    return [f"{service} {operation.name} {path or '(request)'}: {rule}" for path, rule in found]


def entries(text):
    """The recording's entries. moto's recorder writes an entry and its
    newline in separate buffered writes from concurrent threads, so under
    load a line can hold two entries, or (an entry over 8 KB) pieces of two;
    the pieces are skipped and counted."""
    decoder = json.JSONDecoder()
    found, unreadable, at = [], 0, 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return found, unreadable
        try:
            entry, at = decoder.raw_decode(text, at)
            found.append(entry)
        except json.JSONDecodeError:
            unreadable += 1
            newline = text.find("\n", at)
            at = len(text) if newline < 0 else newline + 1


def check_recording(path):
    checked, violations = 0, []
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:  # moto makes it on the first request
        text = ""
    found, unreadable = entries(text)
    for entry in found:
        result = check_request(entry)
        if result is None:
            continue
        checked += 1
        for violation in result:
            if violation not in violations:
                violations.append(violation)
    return {"checked": checked, "unreadable": unreadable, "violations": violations}


def main():
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            answer = check_recording(path)
        except Exception as error:
            answer = {"checked": 0, "violations": [f"the request checker failed on {path}: {error!r}"]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
