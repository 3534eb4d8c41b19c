resource "aws_iam_role" "trust_aws_star" {
  name               = "trust_aws_star"
  assume_role_policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "sts:AssumeRole",
      "Principal": {
        "AWS": "*"
      }
    }
  ]
}
POLICY
}
