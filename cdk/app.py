"""The CDK app: ``make synth`` / ``make deploy`` run it (see cdk/README.md).

Stacks, by region:
- certificate region (us-east-1): ``Edge`` (site certificate, WAF; only when configured) and
  ``EdgeMonitoring`` (the CloudFront alarm);
- primary region: ``Data`` -> ``Api`` -> ``Site`` -> ``Monitoring``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

CDK_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(CDK_DIR.parent), str(CDK_DIR)]  # chalicelib/, gatehouse_infra/

from gatehouse_infra.deploy_access import add_deploy_access  # noqa: E402
from gatehouse_infra.stacks import build  # noqa: E402


def main() -> None:
    app = cdk.App()
    build(app, base_dir=CDK_DIR)
    add_deploy_access(app)  # only with -c githubRepository=owner/name (cdk/README.md, CI/CD)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()


if __name__ == "__main__":
    main()
