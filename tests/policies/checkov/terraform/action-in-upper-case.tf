resource "aws_iam_role_policy" "upper_case" {
  name   = "upper_case"
  role   = "serving"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "S3:*",
      "Resource": "*"
    }
  ]
}
POLICY
}
