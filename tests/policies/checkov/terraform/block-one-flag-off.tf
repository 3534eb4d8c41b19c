resource "aws_s3_bucket_public_access_block" "one_off" {
  bucket                  = "models"
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = false
}
