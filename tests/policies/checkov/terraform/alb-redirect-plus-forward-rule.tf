resource "aws_lb" "public_rule" {
  name               = "public_rule"
  internal           = false
  load_balancer_type = "application"
  subnets            = ["subnet-1", "subnet-2"]
}

resource "aws_lb_listener" "http_redirect_rule" {
  load_balancer_arn = aws_lb.public_rule.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_lb_listener_rule" "forward_anyway" {
  listener_arn = aws_lb_listener.http_redirect_rule.arn
  action {
    type             = "forward"
    target_group_arn = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/tg/1"
  }
  condition {
    path_pattern {
      values = ["/v1/*"]
    }
  }
}
