resource "aws_s3_bucket_public_access_block" "left_out" {
  bucket              = "models"
  block_public_acls   = true
  block_public_policy = true
  ignore_public_acls  = true
}
