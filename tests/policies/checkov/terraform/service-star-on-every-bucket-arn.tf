resource "aws_iam_role_policy" "every_bucket" {
  name   = "every_bucket"
  role   = "serving"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "s3:*",
      "Resource": "arn:aws:s3:::*"
    }
  ]
}
POLICY
}
